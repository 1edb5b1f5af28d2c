//! Bytes to logical lines: split on `\n`, cap the length, join CRI `P` chunks.
//!
//! A line longer than the cap is never held whole: its head is kept for the reject and the
//! rest is counted and skipped as it streams past. A run of CRI partial chunks
//! (`… stdout P …` ended by `… stdout F …`) becomes one line that looks like a single `F` line,
//! so framing downstream stays per line. A last line without a newline is still a line.

use std::io::{self, Read};

use crate::batch::REJECT_RAW_CAP;
use crate::parse::{CriTag, frame};

/// Default cap on one logical line.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;
const READ_CHUNK: usize = 256 * 1024;

/// One logical line as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLine<'a> {
    /// The line, or only its head when `too_long`.
    pub bytes: &'a [u8],
    /// The full length in bytes, newline excluded.
    pub len: u64,
    pub too_long: bool,
    /// 1-based number of the (first) physical line.
    pub line_no: u64,
}

/// Reads logical lines from `input`, calling `each` for every one. Returns the number of bytes
/// read.
pub fn read_lines<R: Read>(
    mut input: R,
    max_line: usize,
    mut each: impl FnMut(RawLine<'_>),
) -> io::Result<u64> {
    let mut joiner = CriJoiner::new(max_line);
    // `buf[start..end]` holds bytes read but not yet split; it grows only while a line does.
    let mut buf: Vec<u8> = vec![0; READ_CHUNK * 2];
    let (mut start, mut end) = (0, 0);
    let mut line_no = 0u64;
    let mut total = 0u64;
    // While skipping an overlong line: its head and the bytes seen so far.
    let mut overlong: Option<(Vec<u8>, u64)> = None;
    loop {
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if buf.len() - end < READ_CHUNK {
            buf.resize(end + READ_CHUNK, 0);
        }
        let n = match input.read(&mut buf[end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        end += n;
        total += n as u64;
        while let Some(i) = memchr::memchr(b'\n', &buf[start..end]) {
            let line = &buf[start..start + i];
            line_no += 1;
            match overlong.take() {
                Some((mut head, seen)) => {
                    fill_head(&mut head, line);
                    let len = seen + line.len() as u64;
                    each(RawLine { bytes: &head, len, too_long: true, line_no });
                }
                None if line.len() > max_line => {
                    let head = &line[..REJECT_RAW_CAP.min(line.len())];
                    each(RawLine { bytes: head, len: line.len() as u64, too_long: true, line_no });
                }
                None => joiner.push(line, line_no, &mut each),
            }
            start += i + 1;
        }
        let pending = end - start;
        if let Some((head, seen)) = overlong.as_mut() {
            fill_head(head, &buf[start..end]);
            *seen += pending as u64;
            end = start;
        } else if pending > max_line {
            let head = buf[start..start + REJECT_RAW_CAP.min(pending)].to_vec();
            overlong = Some((head, pending as u64));
            end = start;
        }
        if n == 0 {
            if let Some((head, seen)) = overlong.take() {
                line_no += 1;
                each(RawLine { bytes: &head, len: seen, too_long: true, line_no });
            } else if pending > 0 {
                line_no += 1;
                joiner.push(&buf[start..end], line_no, &mut each);
            }
            joiner.finish(&mut each);
            return Ok(total);
        }
    }
}

/// Tops up the kept head of an overlong line to [`REJECT_RAW_CAP`] bytes.
fn fill_head(head: &mut Vec<u8>, more: &[u8]) {
    let room = REJECT_RAW_CAP.saturating_sub(head.len());
    head.extend_from_slice(&more[..room.min(more.len())]);
}

/// A run of CRI partial chunks being joined.
struct Partial {
    /// The first chunk's prefix with its tag turned to `F`, then the chunks' messages.
    line: Vec<u8>,
    len: u64,
    line_no: u64,
}

/// Joins CRI `P` chunks per stream (stdout and stderr interleave in one file).
struct CriJoiner {
    max_line: usize,
    stdout: Option<Partial>,
    stderr: Option<Partial>,
}

impl CriJoiner {
    fn new(max_line: usize) -> Self {
        CriJoiner { max_line, stdout: None, stderr: None }
    }

    fn push(&mut self, line: &[u8], line_no: u64, each: &mut impl FnMut(RawLine<'_>)) {
        // A CRI line starts with its timestamp; anything else passes without framing.
        if !line.first().is_some_and(u8::is_ascii_digit) {
            each(RawLine { bytes: line, len: line.len() as u64, too_long: false, line_no });
            return;
        }
        let framed = frame(line);
        let (Some(tag), Some(stream)) = (framed.cri, framed.stream) else {
            each(RawLine { bytes: line, len: line.len() as u64, too_long: false, line_no });
            return;
        };
        let max_line = self.max_line;
        let slot = if stream == "stdout" { &mut self.stdout } else { &mut self.stderr };
        match (slot.as_mut(), tag) {
            (None, CriTag::Full) => {
                each(RawLine { bytes: line, len: line.len() as u64, too_long: false, line_no });
            }
            (None, CriTag::Partial) => {
                let prefix_len = line.len() - framed.msg.len();
                let mut joined = Vec::with_capacity(line.len() * 2);
                joined.extend_from_slice(&line[..prefix_len]);
                // The tag sits just before the space that precedes the message.
                joined[prefix_len - 2] = b'F';
                joined.extend_from_slice(framed.msg);
                *slot = Some(Partial { len: joined.len() as u64, line: joined, line_no });
            }
            (Some(partial), tag) => {
                partial.len += framed.msg.len() as u64;
                if partial.line.len() <= max_line {
                    let room = (max_line + 1).saturating_sub(partial.line.len());
                    partial.line.extend_from_slice(&framed.msg[..room.min(framed.msg.len())]);
                }
                if tag == CriTag::Full {
                    let partial = slot.take().expect("matched Some above");
                    emit(partial, max_line, each);
                }
            }
        }
    }

    /// Emits runs that never got their `F` chunk (the file ended mid-line).
    fn finish(&mut self, each: &mut impl FnMut(RawLine<'_>)) {
        let mut runs: Vec<Partial> =
            self.stdout.take().into_iter().chain(self.stderr.take()).collect();
        runs.sort_by_key(|p| p.line_no);
        for partial in runs {
            emit(partial, self.max_line, each);
        }
    }
}

fn emit(partial: Partial, max_line: usize, each: &mut impl FnMut(RawLine<'_>)) {
    let too_long = partial.len > max_line as u64;
    let bytes = if too_long {
        &partial.line[..REJECT_RAW_CAP.min(partial.line.len())]
    } else {
        &partial.line[..]
    };
    each(RawLine { bytes, len: partial.len, too_long, line_no: partial.line_no });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` in 7-byte pieces to exercise every buffer boundary.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(7);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn lines(input: &[u8], max_line: usize) -> Vec<(String, u64, bool, u64)> {
        let mut out = Vec::new();
        read_lines(Trickle(input), max_line, |l| {
            out.push((String::from_utf8_lossy(l.bytes).into_owned(), l.len, l.too_long, l.line_no))
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_lines_and_keeps_an_unterminated_last_line() {
        let got = lines(b"a\n\nbc\r\nlast", 100);
        let want = [("a", 1, 1), ("", 0, 2), ("bc\r", 3, 3), ("last", 4, 4)];
        assert_eq!(got.len(), want.len());
        for ((text, len, _, no), (wt, wl, wn)) in got.iter().zip(want) {
            assert_eq!((text.as_str(), *len, *no), (wt, wl, wn));
        }
    }

    #[test]
    fn overlong_lines_keep_head_and_length_and_the_next_line_survives() {
        let long = "x".repeat(REJECT_RAW_CAP * 3);
        let input = format!("ok\n{long}\nafter\n{long}");
        let got = lines(input.as_bytes(), 1000);
        assert_eq!(got.len(), 4);
        assert_eq!((got[1].1, got[1].2, got[1].0.len()), (long.len() as u64, true, REJECT_RAW_CAP));
        assert_eq!((got[2].0.as_str(), got[2].3), ("after", 3));
        assert_eq!((got[3].1, got[3].2), (long.len() as u64, true));
    }

    #[test]
    fn cri_partial_chunks_join_per_stream() {
        let input = b"2025-08-18T09:36:30Z stdout P {\"a\":\n\
            2025-08-18T09:36:30Z stderr F err line\n\
            2025-08-18T09:36:30Z stdout P 1,\"b\"\n\
            2025-08-18T09:36:30Z stdout F :2}\n\
            2025-08-18T09:36:31Z stdout F {}\n";
        let got = lines(input, 1000);
        let texts: Vec<_> = got.iter().map(|l| (l.0.as_str(), l.3)).collect();
        assert_eq!(
            texts,
            [
                ("2025-08-18T09:36:30Z stderr F err line", 2),
                ("2025-08-18T09:36:30Z stdout F {\"a\":1,\"b\":2}", 1),
                ("2025-08-18T09:36:31Z stdout F {}", 5),
            ]
        );
    }

    #[test]
    fn overlong_cri_runs_are_too_long_and_unfinished_runs_are_flushed() {
        let chunk = "y".repeat(600);
        let input = format!(
            "2025-08-18T09:36:30Z stdout P {chunk}\n2025-08-18T09:36:30Z stdout F {chunk}\n\
             2025-08-18T09:36:31Z stdout P {{\"cut\""
        );
        let got = lines(input.as_bytes(), 1000);
        assert_eq!(got.len(), 2);
        assert!(got[0].2, "joined run over the cap is too long");
        assert_eq!(got[1].0, "2025-08-18T09:36:31Z stdout F {\"cut\"");
    }
}
