//! The cases. Each is an `async fn` over `&dyn Backend`; the `ALL` table names them. A case
//! returns `Err` with a sentence saying what the backend did and what was expected.

use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex, WriteVector};
use sha2::{Digest, Sha256};

use crate::{Case, CaseFuture, Fresh, pattern};

macro_rules! case {
    ($name:ident) => {
        Case { name: stringify!($name), run: |b, f| -> CaseFuture<'_> { Box::pin($name(b, f)) } }
    };
}

pub(crate) static ALL: &[Case] = &[
    case!(immutable_out_of_order_writes_read_back),
    case!(immutable_invisible_until_finished),
    case!(immutable_incoming_bytes_read_back),
    case!(immutable_reads_past_end_are_short),
    case!(immutable_abort_discards_the_upload),
    case!(immutable_begin_again_restarts_the_upload),
    case!(immutable_complete_share_cannot_begin_again),
    case!(immutable_unknown_shares_are_not_found),
    case!(immutable_write_past_declared_size_is_refused),
    case!(immutable_delete_removes_the_share),
    case!(immutable_shares_list_ascending),
    case!(immutable_empty_share),
    case!(mutable_write_vectors_apply_in_order),
    case!(mutable_holes_read_as_zeros),
    case!(mutable_new_length_truncates_but_never_extends),
    case!(mutable_writes_extend),
    case!(mutable_zero_length_deletes),
    case!(mutable_absent_share_reads_empty),
    case!(indexes_page_in_order),
    case!(concurrent_shares_do_not_mix),
    case!(large_share_streams_in_chunks),
    case!(usage_reports),
];

fn at<T>(what: &str, r: Result<T, BackendError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: unexpected error: {e}"))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, expected {want:?}")) }
}

fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, BackendError>,
    ok: impl Fn(&BackendError) -> bool,
    want: &str,
) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        other => Err(format!("{what}: got {other:?}, expected {want}")),
    }
}

fn short(data: &[u8]) -> String {
    if data.len() <= 16 { format!("{data:?}") } else { format!("{} bytes", data.len()) }
}

fn expect_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: got {}, expected {}", short(got), short(want))) }
}

const N0: ShareNumber = ShareNumber(0);

async fn store_immutable(b: &dyn Backend, si: &StorageIndex, n: ShareNumber, data: &[u8]) -> Result<(), String> {
    at("begin", b.begin(si, n, data.len() as u64).await)?;
    for (i, chunk) in data.chunks(b.max_chunk().max(1)).enumerate() {
        at("write", b.write(si, n, (i * b.max_chunk()) as u64, chunk).await)?;
    }
    at("finish", b.finish(si, n).await)
}

async fn immutable_out_of_order_writes_read_back(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    let data = pattern(1, 100);
    at("begin", b.begin(&si, N0, 100).await)?;
    at("write 50..100", b.write(&si, N0, 50, &data[50..]).await)?;
    at("write 0..30", b.write(&si, N0, 0, &data[..30]).await)?;
    at("write 20..50 (overlapping, same bytes)", b.write(&si, N0, 20, &data[20..50]).await)?;
    at("finish", b.finish(&si, N0).await)?;
    expect_bytes("read 0..100", &at("read", b.read(&si, N0, 0, 100).await)?, &data)?;
    expect_bytes("read 7..19", &at("read", b.read(&si, N0, 7, 12).await)?, &data[7..19])?;
    expect_eq("size", at("size", b.size(&si, N0).await)?, Some(100))?;
    expect_eq("list", at("list", b.list_shares(&si).await)?, vec![N0])
}

async fn immutable_invisible_until_finished(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("begin", b.begin(&si, N0, 4).await)?;
    at("write", b.write(&si, N0, 0, b"abcd").await)?;
    expect_eq("list before finish", at("list", b.list_shares(&si).await)?, vec![])?;
    expect_eq("size before finish", at("size", b.size(&si, N0).await)?, None)?;
    expect_err("read before finish", b.read(&si, N0, 0, 4).await, |e| *e == BackendError::NotFound, "not-found")?;
    at("finish", b.finish(&si, N0).await)?;
    expect_eq("list after finish", at("list", b.list_shares(&si).await)?, vec![N0])
}

async fn immutable_incoming_bytes_read_back(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    expect_err(
        "read-incoming without an upload",
        b.read_incoming(&si, N0, 0, 1).await,
        |e| *e == BackendError::NotFound,
        "not-found",
    )?;
    at("begin", b.begin(&si, N0, 10).await)?;
    at("write 2..6", b.write(&si, N0, 2, b"cdef").await)?;
    expect_bytes("read-incoming 3..5", &at("read-incoming", b.read_incoming(&si, N0, 3, 2).await)?, b"de")?;
    let tail = at("read-incoming", b.read_incoming(&si, N0, 4, 100).await)?;
    expect_eq("read-incoming 4+100 length (short at the declared size)", tail.len(), 6)?;
    expect_bytes("read-incoming 4..6", &tail[..2], b"ef")?;
    at("write 0..2", b.write(&si, N0, 0, b"ab").await)?;
    at("write 6..10", b.write(&si, N0, 6, b"ghij").await)?;
    at("finish", b.finish(&si, N0).await)?;
    expect_err(
        "read-incoming after finish",
        b.read_incoming(&si, N0, 0, 1).await,
        |e| *e == BackendError::NotFound,
        "not-found",
    )
}

async fn immutable_reads_past_end_are_short(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    let data = pattern(2, 100);
    store_immutable(b, &si, N0, &data).await?;
    expect_bytes("read 90+50", &at("read", b.read(&si, N0, 90, 50).await)?, &data[90..])?;
    expect_bytes("read at end", &at("read", b.read(&si, N0, 100, 10).await)?, b"")?;
    expect_bytes("read far past end", &at("read", b.read(&si, N0, 1 << 40, 10).await)?, b"")?;
    expect_bytes("read of zero bytes", &at("read", b.read(&si, N0, 5, 0).await)?, b"")?;
    expect_bytes("read with huge length", &at("read", b.read(&si, N0, 99, u64::MAX).await)?, &data[99..])
}

async fn immutable_abort_discards_the_upload(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("abort of nothing", b.abort(&si, N0).await)?;
    at("begin", b.begin(&si, N0, 6).await)?;
    at("write", b.write(&si, N0, 0, b"abort!").await)?;
    at("abort", b.abort(&si, N0).await)?;
    expect_err("finish after abort", b.finish(&si, N0).await, |e| *e == BackendError::NotFound, "not-found")?;
    expect_eq("list after abort", at("list", b.list_shares(&si).await)?, vec![])?;
    store_immutable(b, &si, N0, b"second").await?;
    expect_bytes("read after re-upload", &at("read", b.read(&si, N0, 0, 6).await)?, b"second")
}

async fn immutable_begin_again_restarts_the_upload(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("begin 10", b.begin(&si, N0, 10).await)?;
    at("write", b.write(&si, N0, 0, b"0123456789").await)?;
    store_immutable(b, &si, N0, b"abc").await?;
    expect_eq("size", at("size", b.size(&si, N0).await)?, Some(3))?;
    expect_bytes("read", &at("read", b.read(&si, N0, 0, 10).await)?, b"abc")
}

async fn immutable_complete_share_cannot_begin_again(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    store_immutable(b, &si, N0, b"kept").await?;
    expect_err("begin on a complete share", b.begin(&si, N0, 4).await, |e| *e == BackendError::Exists, "exists")?;
    expect_err(
        "write to a complete share",
        b.write(&si, N0, 0, b"XXXX").await,
        |e| *e == BackendError::NotFound,
        "not-found",
    )?;
    expect_bytes("read", &at("read", b.read(&si, N0, 0, 4).await)?, b"kept")
}

async fn immutable_unknown_shares_are_not_found(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    expect_err("write without begin", b.write(&si, N0, 0, b"x").await, |e| *e == BackendError::NotFound, "not-found")?;
    expect_err("finish without begin", b.finish(&si, N0).await, |e| *e == BackendError::NotFound, "not-found")?;
    expect_err("read of unknown", b.read(&si, N0, 0, 1).await, |e| *e == BackendError::NotFound, "not-found")?;
    expect_eq("size of unknown", at("size", b.size(&si, N0).await)?, None)?;
    expect_eq("list of unknown", at("list", b.list_shares(&si).await)?, vec![])?;
    expect_eq("delete of unknown", at("delete", b.delete(&si, N0).await)?, false)
}

async fn immutable_write_past_declared_size_is_refused(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("begin", b.begin(&si, N0, 10).await)?;
    expect_err(
        "write 8..12 of 10",
        b.write(&si, N0, 8, b"abcd").await,
        |e| matches!(e, BackendError::OutOfRange(_)),
        "out-of-range",
    )?;
    expect_err(
        "write at u64::MAX",
        b.write(&si, N0, u64::MAX, b"a").await,
        |e| matches!(e, BackendError::OutOfRange(_)),
        "out-of-range",
    )?;
    at("write 0..10", b.write(&si, N0, 0, b"0123456789").await)?;
    at("finish", b.finish(&si, N0).await)?;
    expect_eq("size", at("size", b.size(&si, N0).await)?, Some(10))
}

async fn immutable_delete_removes_the_share(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    store_immutable(b, &si, N0, b"doomed").await?;
    store_immutable(b, &si, ShareNumber(1), b"stays").await?;
    expect_eq("delete", at("delete", b.delete(&si, N0).await)?, true)?;
    expect_eq("list after delete", at("list", b.list_shares(&si).await)?, vec![ShareNumber(1)])?;
    expect_err("read after delete", b.read(&si, N0, 0, 1).await, |e| *e == BackendError::NotFound, "not-found")?;
    expect_eq("delete again", at("delete", b.delete(&si, N0).await)?, false)
}

async fn immutable_shares_list_ascending(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    for n in [7, 0, 200, 3] {
        store_immutable(b, &si, ShareNumber(n), &pattern(u64::from(n), 10)).await?;
    }
    let want: Vec<ShareNumber> = [0, 3, 7, 200].into_iter().map(ShareNumber).collect();
    expect_eq("list", at("list", b.list_shares(&si).await)?, want)?;
    expect_bytes("share 200", &at("read", b.read(&si, ShareNumber(200), 0, 10).await)?, &pattern(200, 10))
}

async fn immutable_empty_share(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("begin 0", b.begin(&si, N0, 0).await)?;
    at("finish", b.finish(&si, N0).await)?;
    expect_eq("size", at("size", b.size(&si, N0).await)?, Some(0))?;
    expect_bytes("read", &at("read", b.read(&si, N0, 0, 10).await)?, b"")
}

fn wv(offset: u64, data: &[u8]) -> WriteVector {
    WriteVector { offset, data: data.to_vec() }
}

async fn mutable_write_vectors_apply_in_order(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("write", b.mutable_write(&si, N0, &[wv(0, b"abcdef"), wv(2, b"XY"), wv(3, b"Z")], None).await)?;
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 100).await)?, b"abXZef")?;
    expect_eq("size", at("size", b.mutable_size(&si, N0).await)?, Some(6))?;
    at("second write", b.mutable_write(&si, ShareNumber(2), &[wv(0, b"two")], None).await)?;
    expect_eq("list", at("list", b.mutable_list(&si).await)?, vec![N0, ShareNumber(2)])?;
    expect_bytes("read 4..", &at("read", b.mutable_read(&si, N0, 4, 100).await)?, b"ef")
}

async fn mutable_holes_read_as_zeros(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("write at 10", b.mutable_write(&si, N0, &[wv(10, b"end")], None).await)?;
    let mut want = vec![0u8; 10];
    want.extend_from_slice(b"end");
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 100).await)?, &want)?;
    at("write at 20", b.mutable_write(&si, N0, &[wv(20, b"!")], None).await)?;
    expect_bytes("gap", &at("read", b.mutable_read(&si, N0, 13, 7).await)?, &[0; 7])
}

async fn mutable_new_length_truncates_but_never_extends(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("write", b.mutable_write(&si, N0, &[wv(0, b"abcdef")], Some(3)).await)?;
    expect_bytes("after truncate", &at("read", b.mutable_read(&si, N0, 0, 100).await)?, b"abc")?;
    at("new-length 100", b.mutable_write(&si, N0, &[], Some(100)).await)?;
    expect_eq("size after larger new-length", at("size", b.mutable_size(&si, N0).await)?, Some(3))?;
    at("write then truncate in one call", b.mutable_write(&si, N0, &[wv(3, b"defgh")], Some(5)).await)?;
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 100).await)?, b"abcde")
}

async fn mutable_writes_extend(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("write", b.mutable_write(&si, N0, &[wv(0, b"abc")], None).await)?;
    at("extend", b.mutable_write(&si, N0, &[wv(3, b"def"), wv(6, b"ghi")], None).await)?;
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 100).await)?, b"abcdefghi")?;
    let big = pattern(3, 300_000);
    at("big write", b.mutable_write(&si, N0, &[wv(9, &big)], None).await)?;
    expect_eq("size", at("size", b.mutable_size(&si, N0).await)?, Some(300_009))?;
    expect_bytes("read big", &at("read", b.mutable_read(&si, N0, 9, 300_000).await)?, &big)
}

async fn mutable_zero_length_deletes(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    at("write", b.mutable_write(&si, N0, &[wv(0, b"abc")], None).await)?;
    at("write", b.mutable_write(&si, ShareNumber(1), &[wv(0, b"def")], None).await)?;
    at("new-length 0", b.mutable_write(&si, N0, &[wv(0, b"ignored")], Some(0)).await)?;
    expect_eq("list", at("list", b.mutable_list(&si).await)?, vec![ShareNumber(1)])?;
    expect_eq("size", at("size", b.mutable_size(&si, N0).await)?, None)?;
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 10).await)?, b"")?;
    expect_eq("explicit delete", at("delete", b.mutable_delete(&si, ShareNumber(1)).await)?, true)?;
    expect_eq("delete again", at("delete", b.mutable_delete(&si, ShareNumber(1)).await)?, false)?;
    expect_eq("list", at("list", b.mutable_list(&si).await)?, vec![])
}

async fn mutable_absent_share_reads_empty(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    expect_bytes("read", &at("read", b.mutable_read(&si, N0, 0, 10).await)?, b"")?;
    expect_eq("size", at("size", b.mutable_size(&si, N0).await)?, None)?;
    expect_eq("list", at("list", b.mutable_list(&si).await)?, vec![])?;
    expect_eq("delete", at("delete", b.mutable_delete(&si, N0).await)?, false)
}

async fn indexes_page_in_order(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let ours = [f.si(1), f.si(2), f.si(3)];
    store_immutable(b, &ours[0], N0, b"a").await?;
    at("mutable", b.mutable_write(&ours[1], N0, &[wv(0, b"b")], None).await)?;
    store_immutable(b, &ours[2], ShareNumber(4), b"c").await?;
    let mut seen = Vec::new();
    let mut after: Option<StorageIndex> = None;
    for _ in 0..100_000 {
        let page = at("list-indexes", b.list_indexes(after.as_ref(), 2).await)?;
        if page.indexes.len() > 2 {
            return Err(format!("list-indexes returned {} indexes for a limit of 2", page.indexes.len()));
        }
        seen.extend(page.indexes);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if seen.windows(2).any(|w| w[0] >= w[1]) {
        return Err("list-indexes is not strictly ascending across pages".into());
    }
    for si in &ours {
        if !seen.contains(si) {
            return Err(format!("list-indexes misses {si}"));
        }
    }
    at("delete", b.delete(&ours[0], N0).await)?;
    let page = at("list-indexes", b.list_indexes(None, 1000).await)?;
    if page.indexes.contains(&ours[0]) && page.next.is_none() {
        return Err(format!("{} is listed after its only share was deleted", ours[0]));
    }
    Ok(())
}

async fn concurrent_shares_do_not_mix(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    const SHARES: u16 = 8;
    const SIZE: usize = 256 * 1024;
    const CHUNK: usize = 64 * 1024;
    let upload = |n: u16| async move {
        let shnum = ShareNumber(n);
        let data = pattern(u64::from(n) + 100, SIZE);
        at("begin", b.begin(&si, shnum, SIZE as u64).await)?;
        // Interleave: chunks go in reverse order, so writers overlap in time.
        for (i, chunk) in data.chunks(CHUNK).enumerate().rev() {
            at("write", b.write(&si, shnum, (i * CHUNK) as u64, chunk).await)?;
        }
        at("finish", b.finish(&si, shnum).await)
    };
    let results = futures::future::join_all((0..SHARES).map(upload)).await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    let reads = futures::future::join_all((0..SHARES).map(|n| b.read(&si, ShareNumber(n), 0, SIZE as u64))).await;
    for (n, r) in reads.into_iter().enumerate() {
        expect_bytes(&format!("share {n}"), &at("read", r)?, &pattern(n as u64 + 100, SIZE))?;
    }
    expect_eq("list", at("list", b.list_shares(&si).await)?.len(), usize::from(SHARES))
}

/// Larger than the 64 MiB the issue names, so no backend can keep it in one buffer by luck.
pub(crate) const LARGE: u64 = 65 * 1024 * 1024 + 12_345;

async fn large_share_streams_in_chunks(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let si = f.si(0);
    let chunk = b.max_chunk().clamp(4096, 1 << 20) as u64;
    at("begin", b.begin(&si, N0, LARGE).await)?;
    let mut written = Sha256::new();
    let mut offset = 0;
    while offset < LARGE {
        let n = chunk.min(LARGE - offset);
        let data = pattern(offset / chunk, n as usize);
        written.update(&data);
        at("write", b.write(&si, N0, offset, &data).await)?;
        offset += n;
    }
    at("finish", b.finish(&si, N0).await)?;
    expect_eq("size", at("size", b.size(&si, N0).await)?, Some(LARGE))?;
    let mut read = Sha256::new();
    let mut offset = 0;
    while offset < LARGE {
        let data = at("read", b.read(&si, N0, offset, chunk).await)?;
        if data.is_empty() {
            return Err(format!("read at {offset} returned nothing before the end"));
        }
        read.update(&data);
        offset += data.len() as u64;
    }
    expect_eq("sha-256 of the share", read.finalize(), written.finalize())?;
    at("delete", b.delete(&si, N0).await).map(drop)
}

async fn usage_reports(b: &dyn Backend, f: &Fresh) -> Result<(), String> {
    let before = at("usage", b.usage().await)?;
    store_immutable(b, &f.si(0), N0, &pattern(9, 10_000)).await?;
    let after = at("usage", b.usage().await)?;
    if let (Some(b), Some(a)) = (before.used, after.used)
        && a < b + 10_000
    {
        return Err(format!("used went from {b} to {a} after storing a 10,000-byte share"));
    }
    if after.available == Some(0) {
        return Err("available is 0 right after a successful write".into());
    }
    Ok(())
}
