//! Saved HTTP responses (`curl -sI`, `curl -v`, raw header blocks) and their verdicts.
#![no_main]

use egresslens::probe::{parse_blocks, proxy_servers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for block in parse_blocks(text, &proxy_servers(&[])) {
        let _ = block.summary();
        let _ = block.host();
    }
});
