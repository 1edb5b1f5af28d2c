//! Bytes to logical lines: capping long lines and joining CRI `P`…`F` runs. The oracle is the
//! input split in one piece: reading it as a file that grows in uneven steps, through small
//! reads, must give the same lines (numbers, lengths, bytes, or the head of an overlong one),
//! in the same order, and account for every byte read. Inputs with a CRI run open across more
//! than 16 lines are left out of the comparison: a reader looks back a bounded number of lines
//! for where a run it would cut began (16 when none of them is a CRI line, else 256; see
//! `source::lines`), and real CRI files have a long line's chunks one after another.
#![no_main]

use std::io::{self, Read};

use egresslens::parse::{CriTag, frame};
use egresslens::source::lines::{Chunk, ChunkReader, split_lines};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Line {
    line_no: u64,
    len: u64,
    too_long: bool,
    bytes: Vec<u8>,
}

fn line(raw: egresslens::source::lines::RawLine<'_>) -> Line {
    Line { line_no: raw.line_no, len: raw.len, too_long: raw.too_long, bytes: raw.bytes.to_vec() }
}

/// Hands out at most `piece` bytes per read, then "nothing more for now".
struct Trickle<'a> {
    data: &'a [u8],
    piece: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.piece.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Whether a CRI run (per stream, `P` lines up to an `F` line or the end) spans more than 16
/// physical lines.
fn has_long_run(input: &[u8]) -> bool {
    let mut open: [Option<usize>; 2] = [None, None];
    let lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let framed = frame(line);
        let (Some(tag), Some(stream)) = (framed.cri, framed.stream) else { continue };
        let slot = &mut open[usize::from(stream == "stdout")];
        match (tag, *slot) {
            (CriTag::Partial, None) => *slot = Some(i),
            (CriTag::Full, Some(start)) => {
                if i - start + 1 > 16 {
                    return true;
                }
                *slot = None;
            }
            _ => {}
        }
    }
    open.iter().flatten().any(|start| lines.len() - start > 16)
}

fuzz_target!(|data: &[u8]| {
    let [cap, piece, steps, input @ ..] = data else { return };
    let max_line = 8 + usize::from(*cap) * 8;
    let piece = 1 + usize::from(*piece % 64);
    let steps = 1 + usize::from(*steps % 8);

    let mut whole = Vec::new();
    split_lines(input, 1, max_line, |raw| whole.push(line(raw)));

    let mut streamed = Vec::new();
    let mut last_offset = 0;
    let mut each = |chunk: Chunk| {
        assert!(chunk.end_offset() >= last_offset, "offsets never go back");
        last_offset = chunk.end_offset();
        match chunk {
            Chunk::Lines { buf, len, first_line_no, .. } => {
                split_lines(&buf[..len], first_line_no, max_line, |raw| streamed.push(line(raw)));
            }
            Chunk::Single { line, len, too_long, line_no, .. } => {
                streamed.push(Line { line_no, len, too_long, bytes: line });
            }
        }
    };
    let mut reader = ChunkReader::new(64, max_line, || None);
    let step = input.len().div_ceil(steps).max(1);
    for part in input.chunks(step) {
        reader.read_available(&mut Trickle { data: part, piece }, &mut each).expect("no I/O here");
    }
    let total = reader.finish(&mut each);
    assert_eq!(total, input.len() as u64);
    assert_eq!(last_offset, if input.is_empty() { 0 } else { total });
    if !has_long_run(input) {
        assert_eq!(whole, streamed);
    }
});
