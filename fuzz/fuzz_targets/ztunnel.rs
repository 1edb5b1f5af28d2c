//! ztunnel access lines, text or JSON, and what the findings read from a connection.
#![no_main]

use egresslens::netrange::InternalRanges;
use egresslens::parse::ztunnel::{detect, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = detect(text.as_bytes());
    if let Ok(connection) = parse(text) {
        let _ = connection.is_outbound_complete();
        let _ = connection.bypasses(&InternalRanges::default());
        let _ = connection.source();
    }
});
