//! Istio's default TEXT access-log format, and the operational Envoy lines next to it.
#![no_main]

use egresslens::parse::envoy_text::{find_entry, is_operational_log, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = is_operational_log(text);
    if let Some(entry) = find_entry(text) {
        if let Ok(parsed) = parse(entry) {
            let _ = parsed.host();
        }
    }
    // The parser on its own, as if the entry had been found anywhere.
    let _ = parse(text);
});
