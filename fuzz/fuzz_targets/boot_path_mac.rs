//! Boot paths and MACs: the HTTP boot server's routing (`/boot/v1/…`, percent-decoding, [`BootPath::parse`],
//! [`Mac::parse`]), its `Range` and `If-None-Match` headers, heartbeat bodies, digests.
//!
//! Input: `path NUL range NUL if-none-match NUL rest`; `rest` is also parsed as a heartbeat body. The path is
//! also parsed directly as a boot path, a MAC and a digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::node::boot::BootPath;
use tandem::node::boot::heartbeat::HeartbeatReport;
use tandem_storage::{Digest, Mac};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(4, |&b| b == 0);
    let path = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let range = fields.next().unwrap_or_default();
    let if_none_match = fields.next().unwrap_or_default();
    let rest = fields.next().unwrap_or_default();

    for size in [0, 1, 1000, u64::MAX] {
        tandem::node::boot::http::fuzz::request(&path, range, if_none_match, size);
    }
    if let Ok(BootPath::Firmware(name)) = BootPath::parse(&path) {
        assert!(!name.contains('/') && !name.contains(".."), "{name:?}");
    }
    // A MAC or digest that parses prints in a form that parses back to the same value.
    if let Ok(mac) = Mac::parse(&path) {
        assert_eq!(Mac::parse(&mac.to_string()), Ok(mac));
    }
    if let Ok(digest) = Digest::parse(&path) {
        assert_eq!(Digest::parse(&digest.to_string()).ok(), Some(digest));
    }
    let _ = HeartbeatReport::parse(rest);
});
