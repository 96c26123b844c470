//! `marsh init`: create a node directory with its whole identity and initial config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use marsh::Node;
use marsh_node::{InitOptions, NodeDir};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The node directory to create.
    #[arg(long)]
    dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:3457")]
    listen: SocketAddr,
    /// Host clients connect to (default: the listen IP).
    #[arg(long)]
    public_host: Option<String>,
    /// Port clients connect to (default: the listen port).
    #[arg(long)]
    public_port: Option<u16>,
    /// Name shown to clients.
    #[arg(long, default_value = "marsh")]
    nickname: String,
    /// Where the default disk store keeps shares (default: NODE_DIR-shares beside the node).
    #[arg(long)]
    storage_dir: Option<PathBuf>,
    /// The status page, metrics and health probe (default 127.0.0.1:3458; empty: off).
    #[arg(long)]
    web_listen: Option<String>,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    // Port 0 would pick another port at every start, and the NURL clients hold must stay the
    // same: a free port is picked once, now, and kept in the config.
    let listen = match args.listen.port() {
        0 => {
            let picked = std::net::TcpListener::bind(args.listen)?.local_addr()?;
            println!("listening on {picked} (port 0 asked: a free port picked now, kept in the config)");
            picked
        }
        _ => args.listen,
    };
    let options = InitOptions {
        listen,
        public_host: args.public_host,
        public_port: args.public_port,
        nickname: args.nickname,
        storage_dir: args.storage_dir,
        web_listen: args.web_listen,
        settings: Vec::new(),
    };
    let dir = NodeDir::init(&args.dir, &options)?;
    let node = Node::open(dir.root())?;
    println!("created marsh node {} in {}", node.identity().server_id, dir.root().display());
    println!("NURL: {}", node.nurl());
    println!("Back up {} now: it holds the node's whole identity and config.", dir.root().display());
    Ok(ExitCode::SUCCESS)
}
