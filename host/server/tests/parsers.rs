//! Property tests of every parser that reads what a grid member (or a store) sends: CBOR
//! bodies through `wire::scan` and the schemas, `Range` and `Content-Range` values,
//! `X-Tahoe-Authorization` headers, storage indexes in paths, NURLs, and accounting
//! snapshots handed back by a strategy. For any input: no panic, and the memory one parse
//! allocates at its peak is bounded by a small multiple of the input's size (measured by a
//! per-thread counting allocator), whatever sizes the input claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{HeaderMap, HeaderValue};
use marsh_server::{auth, ranges, wire};
use proptest::prelude::*;

/// Counts the bytes each thread has allocated and not freed, and its peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are plain per-thread
// cells that allocate nothing.
#[allow(unsafe_code, reason = "a global allocator is an unsafe trait; this one only counts and forwards")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count(delta: isize) {
    // `try_with`: during thread teardown the cells may be gone; such frees are not counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f`; the most bytes it held allocated at once beyond what was live before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, (PEAK.with(Cell::get) - base).max(0) as usize)
}

/// Every stage a CBOR request body goes through on the server, as the handlers call them.
fn parse_body(body: &[u8]) {
    if wire::scan(body, 100_000).is_err() {
        return;
    }
    let Ok(value) = wire::decode_limited(body, 100_000) else { return };
    let _ = wire::allocate_request(&value);
    let _ = wire::read_test_write_request(&value);
    let _ = wire::corrupt_request(&value);
}

/// CBOR heads that claim huge lengths or counts, and the nesting that stresses a decoder.
fn hostile_head() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // An array, map, byte or text string of up to 2^64-1 items or bytes.
        (prop::sample::select(vec![0x5bu8, 0x7b, 0x9b, 0xbb]), any::<u64>()).prop_map(|(major, n)| [
            &[major][..],
            &n.to_be_bytes()
        ]
        .concat()),
        // Indefinite-length containers and breaks.
        prop::collection::vec(prop::sample::select(vec![0x5fu8, 0x7f, 0x9f, 0xbf, 0xff]), 1..64),
        // Deep nesting: arrays of one array of one array...
        (1usize..5000).prop_map(|depth| vec![0x81; depth]),
        // Tags wrapping tags.
        (1usize..2000).prop_map(|depth| [0xd9, 0x01, 0x02].repeat(depth)),
    ]
}

/// A read-test-write body as the 1.20 client sends it, to mutate.
fn valid_rtw() -> Vec<u8> {
    marsh_gbs_client::rtw_body(3, &[(0, 4, b"abcd")], &[(0, b"hello"), (100, b"world")], &[(0, 10)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_body_parses_or_fails_within_bounded_memory(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        let ((), peak) = peak_of(|| parse_body(&body));
        prop_assert!(peak <= 64 * body.len() + (64 << 10), "{peak} bytes for a {}-byte body", body.len());
    }

    #[test]
    fn claimed_sizes_allocate_nothing_of_their_own(
        head in hostile_head(),
        prefix in prop::collection::vec(any::<u8>(), 0..16),
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let body = [prefix, head, tail].concat();
        let ((), peak) = peak_of(|| parse_body(&body));
        prop_assert!(peak <= 64 * body.len() + (64 << 10), "{peak} bytes for a {}-byte body", body.len());
    }

    #[test]
    fn a_mutated_client_body_parses_or_fails_cleanly(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = valid_rtw();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let ((), peak) = peak_of(|| parse_body(&body));
        prop_assert!(peak <= 64 * body.len() + (64 << 10));
    }

    #[test]
    fn ranges_parse_to_ordered_spans_or_nothing(a in any::<u64>(), b in any::<u64>(), junk in "[ -~]{0,40}") {
        for value in [
            format!("bytes={a}-{b}"),
            format!("bytes {a}-{b}/*"),
            format!("bytes {a}-{b}/{b}"),
            format!("bytes={a}-{b},{a}-{b}"),
            format!("bytes={junk}"),
            format!("bytes {junk}"),
            junk.clone(),
        ] {
            if let Some((start, end)) = ranges::parse_range(&value) {
                prop_assert!(start <= end, "{value:?}");
                prop_assert!(!value.contains(','));
            }
            if let Some((start, end)) = ranges::parse_content_range(&value) {
                // A half-open span of at least one byte, never past u64::MAX.
                prop_assert!(start < end, "{value:?}");
            }
        }
    }

    #[test]
    fn secret_headers_parse_or_are_refused(values in prop::collection::vec("[ -~]{0,200}", 0..12)) {
        let mut headers = HeaderMap::new();
        for v in &values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append("x-tahoe-authorization", v);
            }
        }
        let kinds = [auth::SecretKind::LeaseRenew, auth::SecretKind::LeaseCancel, auth::SecretKind::Upload];
        let (result, peak) = peak_of(|| auth::secrets(&headers, &kinds));
        if let Ok(secrets) = result {
            prop_assert_eq!(secrets.len(), kinds.len());
            for (kind, secret) in &secrets {
                let most = if *kind == auth::SecretKind::Upload { 64 } else { 32 };
                prop_assert!(!secret.is_empty() && secret.len() <= most, "{kind:?}: {} bytes", secret.len());
            }
        }
        let input: usize = values.iter().map(String::len).sum();
        prop_assert!(peak <= 16 * input + (16 << 10));
    }

    #[test]
    fn storage_indexes_round_trip_or_are_refused(s in "[a-z2-7]{0,30}|[ -~]{0,40}") {
        if let Ok(si) = s.parse::<marsh_core::StorageIndex>() {
            prop_assert_eq!(si.to_base32(), s);
        }
    }

    #[test]
    fn nurls_parse_or_are_refused(s in "pb://[ -~]{0,120}|[ -~]{0,60}") {
        if let Ok(nurl) = s.parse::<marsh_gbs_client::Nurl>() {
            prop_assert!(!nurl.spki.is_empty() && !nurl.swissnum.is_empty(), "{s:?}");
        }
    }
}

proptest! {
    // Each case opens SQLite databases; fewer cases.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_snapshot_is_refused_or_restored_and_the_database_stays_sound(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let source = marsh_accountant::Accountant::in_memory().expect("source");
        let attrs = marsh_accountant::Attributes::default();
        source.create_account("alice", &attrs, 1).expect("account");
        let mut bytes = source.snapshot().expect("snapshot").bytes;
        for (at, byte) in flips {
            // The header stays, so the damage reaches SQLite's own checks.
            let i = 16 + at.index(bytes.len() - 16);
            bytes[i] = byte;
        }
        bytes.truncate(16 + cut.index(bytes.len() - 15));
        let target = marsh_accountant::Accountant::in_memory().expect("target");
        target.create_account("bob", &attrs, 1).expect("account");
        match target.restore_snapshot(&bytes) {
            Ok(_) => prop_assert!(target.accounts().is_ok(), "restored, then: {:?}", target.accounts()),
            // Refused: nothing changed.
            Err(_) => {
                let names: Vec<String> = target.accounts().expect("accounts").into_iter().map(|a| a.name).collect();
                prop_assert_eq!(names, vec!["anonymous".to_owned(), "bob".to_owned()]);
            }
        }
    }
}
