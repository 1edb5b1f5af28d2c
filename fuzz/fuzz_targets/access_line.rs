//! One raw log line through framing (pod, timestamp and CRI prefixes) and the access-log
//! parser (Envoy JSON or TEXT, ztunnel lines named as such). Beyond "no panic": both
//! projections must agree on whether the line is a record and on what stats read from it.
#![no_main]

use egresslens::parse::{Projection, frame, parse_message, sniff_encoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let framed = frame(line);
    let _ = sniff_encoding(framed.msg);
    let all = parse_message(framed.msg, Projection::All);
    let stats = parse_message(framed.msg, Projection::Stats);
    match (&all, &stats) {
        (Ok(all), Ok(stats)) => {
            assert_eq!(all.host(), stats.host());
            assert_eq!(all.response_code, stats.response_code);
            assert_eq!(all.duration_ms.map(f64::to_bits), stats.duration_ms.map(f64::to_bits));
            assert_eq!(all.bytes_sent, stats.bytes_sent);
            assert_eq!(all.response_flags, stats.response_flags);
            assert_eq!(all.start_time_ns, stats.start_time_ns);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("projections disagree: {all:?} vs {stats:?}"),
    }
});
