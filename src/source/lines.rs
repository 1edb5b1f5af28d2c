//! Bytes to logical lines: cut the input into chunks of whole lines, split them, cap the line
//! length, join CRI `P` chunks.
//!
//! [`read_chunks`] only looks for the last newline of each chunk, so the splitting and
//! parsing of chunks ([`split_lines`]) can run on other threads. A chunk never ends inside a
//! run of CRI partial lines (`… stdout P …` up to `… stdout F …`), which [`split_lines`] joins
//! into one line that looks like a single `F` line. A line (or CRI run) longer than the cap is
//! never held whole: its head is kept for the reject and the rest is counted as it streams
//! past, while the other stream's lines around it are joined and handed over as usual. A last
//! line without a newline is still a line. Where a chunk may end is found by looking back a
//! bounded number of lines (`CUT_LOOKBACK_LINES`, or 16 when none of them is a CRI line), so
//! a run open across more lines than that may be split in two; containerd writes a long
//! line's chunks one after another, so real files have no such runs.

use std::io::{self, Read};

use crate::batch::REJECT_RAW_CAP;
use crate::parse::{CriTag, frame};

/// Default cap on one logical line.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;
const READ_SIZE: usize = 256 * 1024;

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

/// A piece of input for one worker: whole lines, or one logical line read line by line
/// (around a line too long to hold). `end_offset` is the input's byte offset just after it:
/// where reading resumes.
#[derive(Debug)]
pub enum Chunk {
    /// Lines in `buf[..len]`; the buffer beyond is spare room kept for reuse.
    Lines { buf: Vec<u8>, len: usize, first_line_no: u64, end_offset: u64 },
    /// One logical line; only its head when `too_long`.
    Single { line: Vec<u8>, len: u64, too_long: bool, line_no: u64, end_offset: u64 },
}

impl Chunk {
    /// Bytes of lines the chunk holds (the kept head for an overlong line).
    pub fn len_bytes(&self) -> usize {
        match self {
            Chunk::Lines { len, .. } => *len,
            Chunk::Single { line, .. } => line.len(),
        }
    }

    pub fn end_offset(&self) -> u64 {
        match self {
            Chunk::Lines { end_offset, .. } | Chunk::Single { end_offset, .. } => *end_offset,
        }
    }

    /// The chunk's buffer, for [`read_chunks`] to reuse.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        match self {
            Chunk::Lines { buf, .. } => Some(buf),
            Chunk::Single { .. } => None,
        }
    }

    /// Calls `each` for every logical line of the chunk.
    pub fn lines(&self, max_line: usize, each: impl FnMut(RawLine<'_>)) {
        match self {
            Chunk::Lines { buf, len, first_line_no, .. } => {
                split_lines(&buf[..*len], *first_line_no, max_line, each);
            }
            Chunk::Single { line, len, too_long, line_no, .. } => {
                let mut each = each;
                each(RawLine { bytes: line, len: *len, too_long: *too_long, line_no: *line_no });
            }
        }
    }
}

/// Reads `input` to its end in chunks of about `chunk_size` bytes that end at a line boundary
/// outside any CRI partial run, calling `each` for every chunk. Memory stays within about
/// `chunk_size + 3 × max_line`. Buffers of processed chunks come back through `recycled` (fresh
/// ones cost page faults and zeroing). Returns the bytes read.
pub fn read_chunks<R: Read>(
    mut input: R,
    chunk_size: usize,
    max_line: usize,
    recycled: impl FnMut() -> Option<Vec<u8>>,
    mut each: impl FnMut(Chunk),
) -> io::Result<u64> {
    let mut reader = ChunkReader::new(chunk_size, max_line, recycled);
    reader.read_available(&mut input, &mut each)?;
    Ok(reader.finish(&mut each))
}

/// [`read_chunks`] in steps, for inputs that grow: [`ChunkReader::read_available`] reads what
/// is there and hands over every whole line, keeping an unfinished last line (or CRI run) for
/// the next call; [`ChunkReader::finish`] hands that over too once the input is complete.
#[derive(Debug)]
pub struct ChunkReader<F> {
    chunk_size: usize,
    max_line: usize,
    recycled: F,
    /// `buf[..end]` holds what was read and not handed over; the rest is room, zeroed once.
    buf: Vec<u8>,
    end: usize,
    line_no: u64,
    total: u64,
    careful: Option<Careful>,
}

impl<F: FnMut() -> Option<Vec<u8>>> ChunkReader<F> {
    pub fn new(chunk_size: usize, max_line: usize, recycled: F) -> Self {
        let mut reader = ChunkReader {
            chunk_size,
            max_line,
            recycled,
            buf: Vec::new(),
            end: 0,
            line_no: 1,
            total: 0,
            careful: None,
        };
        reader.buf = reader.fresh(0);
        reader
    }

    /// Bytes read from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    /// The input offset just after the last line handed over.
    pub fn handed_over(&self) -> u64 {
        self.total - self.end as u64
    }

    /// A buffer for the next chunk, starting with the `carry` bytes after `buf[..from]`.
    fn fresh(&mut self, from: usize) -> Vec<u8> {
        let carry = self.end.saturating_sub(from);
        let size = (self.chunk_size + READ_SIZE).max(carry + READ_SIZE);
        let mut next = (self.recycled)().unwrap_or_default();
        if next.len() < size {
            next.resize(size, 0);
        }
        next[..carry].copy_from_slice(&self.buf[from..from + carry]);
        next
    }

    /// Reads until `input` has nothing more for now (a read of 0 bytes), handing over every
    /// chunk of whole lines. Returns the bytes read.
    pub fn read_available<R: Read>(
        &mut self,
        input: &mut R,
        each: &mut impl FnMut(Chunk),
    ) -> io::Result<u64> {
        let before = self.total;
        loop {
            if self.buf.len() - self.end < READ_SIZE {
                self.buf.resize(self.end + READ_SIZE, 0);
            }
            // Reads no bigger than a chunk, so small chunks stay small.
            let room = (self.buf.len() - self.end).min(self.chunk_size.max(READ_SIZE / 64));
            let n = match input.read(&mut self.buf[self.end..self.end + room]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            self.total += n as u64;
            if self.careful.is_some() && !self.read_carefully(false, each) {
                if n == 0 {
                    return Ok(self.total - before);
                }
                continue;
            }
            // Where the input could be cut: before the unfinished last line, and before a CRI
            // run that the lines before it end with.
            let tail = memchr::memrchr(b'\n', &self.buf[..self.end]).map_or(0, |i| i + 1);
            let cut = cut_before_partial_run(&self.buf[..tail]);
            if self.end - cut > self.max_line {
                // What follows the cut is already over the cap: hand over the lines before it,
                // then read line by line until no line or run is open.
                if cut > 0 {
                    self.send(cut, each);
                }
                self.careful = Some(Careful::new(self.line_no, self.max_line));
                continue;
            }
            if (self.end >= self.chunk_size || n == 0) && cut > 0 {
                self.send(cut, each);
            }
            if n == 0 {
                return Ok(self.total - before);
            }
        }
    }

    /// Hands over what is left once the input is complete: an unfinished last line is still a
    /// line, an unfinished CRI run is joined as far as it goes. Returns the bytes read in all.
    pub fn finish(mut self, each: &mut impl FnMut(Chunk)) -> u64 {
        if self.careful.is_some() {
            self.read_carefully(true, each);
        }
        if self.end > 0 {
            let (buf, len) = (std::mem::take(&mut self.buf), self.end);
            each(Chunk::Lines { buf, len, first_line_no: self.line_no, end_offset: self.total });
        }
        self.total
    }

    /// Reads the buffered bytes line by line, handing over each logical line as it completes;
    /// returns true once no line or run is open (or at `eof`, which ends them): back to chunks.
    fn read_carefully(&mut self, eof: bool, each: &mut impl FnMut(Chunk)) -> bool {
        let careful = self.careful.as_mut().expect("only called while reading carefully");
        let (total, end) = (self.total, self.end);
        let single = |raw: RawLine<'_>, end_offset| Chunk::Single {
            line: raw.bytes.to_vec(),
            len: raw.len,
            too_long: raw.too_long,
            line_no: raw.line_no,
            end_offset,
        };
        let mut pos = 0;
        let mut idle = false;
        while pos < end && !idle {
            match memchr::memchr(b'\n', &self.buf[pos..end]) {
                Some(i) => {
                    careful.add(&self.buf[pos..pos + i]);
                    pos += i + 1;
                    let end_offset = total - (end - pos) as u64;
                    careful.end_line(&mut |raw| each(single(raw, end_offset)));
                    idle = careful.idle();
                }
                None => {
                    careful.add(&self.buf[pos..end]);
                    pos = end;
                }
            }
        }
        if eof && !idle {
            if careful.mid_line {
                careful.end_line(&mut |raw| each(single(raw, total)));
            }
            careful.joiner.finish(&mut |raw| each(single(raw, total)));
            idle = true;
        }
        let line_no = careful.line_no;
        self.buf.copy_within(pos..end, 0);
        self.end -= pos;
        if idle {
            self.careful = None;
            self.line_no = line_no;
        }
        idle
    }

    /// Hands `buf[..cut]` over as a chunk and keeps the rest.
    fn send(&mut self, cut: usize, each: &mut impl FnMut(Chunk)) {
        let next = self.fresh(cut);
        let first_line_no = self.line_no;
        self.line_no += memchr::memchr_iter(b'\n', &self.buf[..cut]).count() as u64;
        self.end -= cut;
        let end_offset = self.handed_over();
        let buf = std::mem::replace(&mut self.buf, next);
        each(Chunk::Lines { buf, len: cut, first_line_no, end_offset });
    }
}

/// How far back a cut looks for open CRI runs: containerd writes a long line's chunks one
/// after another, so another stream interleaves at most a few lines into a run.
const CUT_LOOKBACK_LINES: usize = 256;

/// Where to cut `lines` (whole lines, or empty) so that no run of CRI `P` lines is split: at
/// their end, or before the earliest run still open there (stdout and stderr each may have
/// one). Lines that are not CRI lines (damage inside a CRI file) are stepped over, as
/// [`split_lines`] passes them through without ending a run.
fn cut_before_partial_run(lines: &[u8]) -> usize {
    // The newest CRI lines: (start, is stdout, tag).
    let mut recent: Vec<(usize, bool, CriTag)> = Vec::new();
    let mut end = lines.len();
    let mut looked = 0;
    // Input with no CRI line among its last few is not CRI input: stop there.
    while end > 0 && looked < CUT_LOOKBACK_LINES && (looked < 16 || !recent.is_empty()) {
        let start = memchr::memrchr(b'\n', &lines[..end - 1]).map_or(0, |i| i + 1);
        let framed = frame(&lines[start..end - 1]);
        if let (Some(tag), Some(stream)) = (framed.cri, framed.stream) {
            recent.push((start, stream == "stdout", tag));
        }
        looked += 1;
        end = start;
    }
    let mut cut = lines.len();
    for stdout in [true, false] {
        let mut run_start = None;
        for &(start, _, tag) in recent.iter().filter(|(_, s, _)| *s == stdout) {
            if tag != CriTag::Partial {
                break;
            }
            run_start = Some(start);
        }
        if let Some(start) = run_start {
            cut = cut.min(start);
        }
    }
    cut
}

/// Line-by-line reading, for when what follows the last possible cut is over the cap: an
/// overlong line, or a CRI run open there with more than the cap after its start. Lines are
/// joined exactly as [`split_lines`] joins them and handed over one at a time; no line is held
/// beyond the cap (the physical line being read, and each stream's open run).
/// Reading goes back to chunks as soon as no line or run is open.
#[derive(Debug)]
struct Careful {
    joiner: CriJoiner,
    /// The head of the physical line being read (see [`held`]).
    head: Vec<u8>,
    /// Its full length so far.
    len: u64,
    mid_line: bool,
    /// The number of the physical line being read.
    line_no: u64,
}

impl Careful {
    fn new(line_no: u64, max_line: usize) -> Self {
        Careful {
            joiner: CriJoiner::new(max_line),
            head: Vec::new(),
            len: 0,
            mid_line: false,
            line_no,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        let room = held(self.joiner.max_line).saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.len += bytes.len() as u64;
        self.mid_line = true;
    }

    /// The physical line is complete: joins it (or hands it over).
    fn end_line(&mut self, each: &mut impl FnMut(RawLine<'_>)) {
        self.joiner.push(&self.head, self.len, self.line_no, each);
        self.head.clear();
        self.len = 0;
        self.mid_line = false;
        self.line_no += 1;
    }

    /// No line or run is open: chunks can start here.
    fn idle(&self) -> bool {
        !self.mid_line && self.joiner.is_empty()
    }
}

/// Splits lines held in memory, `first_line_no` being the number of the first; a last line
/// without newline is a line.
pub fn split_lines(
    bytes: &[u8],
    first_line_no: u64,
    max_line: usize,
    mut each: impl FnMut(RawLine<'_>),
) {
    let mut joiner = CriJoiner::new(max_line);
    let mut line_no = first_line_no;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let start = &line[..line.len().min(held(max_line))];
        joiner.push(start, line.len() as u64, line_no, &mut each);
        line_no += 1;
        rest = next;
    }
    joiner.finish(&mut each);
}

/// How much of a physical line is held: enough to tell it is over the cap, and a reject's head.
fn held(max_line: usize) -> usize {
    (max_line + 1).max(REJECT_RAW_CAP)
}

/// A run of CRI partial chunks being joined.
#[derive(Debug)]
struct Partial {
    /// The first chunk's prefix with its tag turned to `F`, then the chunks' messages.
    line: Vec<u8>,
    len: u64,
    line_no: u64,
}

/// Joins CRI `P` chunks per stream (stdout and stderr interleave in one file).
#[derive(Debug)]
struct CriJoiner {
    max_line: usize,
    stdout: Option<Partial>,
    stderr: Option<Partial>,
}

impl CriJoiner {
    fn new(max_line: usize) -> Self {
        CriJoiner { max_line, stdout: None, stderr: None }
    }

    fn is_empty(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// Takes the next physical line, `len` bytes long, of which `line` holds the start (all of
    /// it, or [`held`] bytes of a longer one).
    fn push(&mut self, line: &[u8], len: u64, line_no: u64, each: &mut impl FnMut(RawLine<'_>)) {
        let max_line = self.max_line;
        let alone = |each: &mut dyn FnMut(RawLine<'_>)| {
            let too_long = len > max_line as u64;
            let bytes = if too_long { &line[..REJECT_RAW_CAP.min(line.len())] } else { line };
            each(RawLine { bytes, len, too_long, line_no });
        };
        // A CRI line starts with its timestamp; anything else passes without framing.
        if !line.first().is_some_and(u8::is_ascii_digit) {
            return alone(each);
        }
        let framed = frame(line);
        let (Some(tag), Some(stream)) = (framed.cri, framed.stream) else {
            return alone(each);
        };
        // The message's full length: `line` may hold only its start.
        let msg_len = framed.msg.len() as u64 + (len - line.len() as u64);
        let slot = if stream == "stdout" { &mut self.stdout } else { &mut self.stderr };
        match (slot.as_mut(), tag) {
            (None, CriTag::Full) => alone(each),
            (None, CriTag::Partial) => {
                let prefix_len = line.len() - framed.msg.len();
                let mut joined = Vec::with_capacity((line.len() * 2).min(max_line + 1));
                joined.extend_from_slice(&line[..prefix_len]);
                // The tag sits just before the space that precedes the message.
                joined[prefix_len - 2] = b'F';
                joined.extend_from_slice(framed.msg);
                let len = prefix_len as u64 + msg_len;
                *slot = Some(Partial { len, line: joined, line_no });
            }
            (Some(partial), tag) => {
                partial.len += msg_len;
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

    /// Emits runs that never got their `F` chunk (the input ended mid-line).
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

    type Line = (String, u64, bool, u64);

    fn read_all(input: &[u8], chunk: usize, max_line: usize) -> Vec<Line> {
        let mut out = Vec::new();
        read_chunks(
            Trickle(input),
            chunk,
            max_line,
            || None,
            |c| {
                c.lines(max_line, |l| {
                    let text = String::from_utf8_lossy(l.bytes).into_owned();
                    out.push((text, l.len, l.too_long, l.line_no));
                });
            },
        )
        .unwrap();
        out
    }

    /// Every chunk size gives the same lines.
    fn lines(input: &[u8], max_line: usize) -> Vec<Line> {
        let want = read_all(input, 1 << 20, max_line);
        for chunk in [1, 16, 100, 1000] {
            assert_eq!(read_all(input, chunk, max_line), want, "chunk size {chunk}");
        }
        want
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
    fn a_line_far_longer_than_chunk_and_cap_is_never_buffered_whole() {
        let long = "y".repeat(50_000);
        let input = format!("a\n{long}\nb\n{long}");
        let mut biggest = 0;
        read_chunks(
            Trickle(input.as_bytes()),
            1000,
            2000,
            || None,
            |c| {
                if let Chunk::Lines { len, .. } = &c {
                    biggest = biggest.max(*len);
                }
            },
        )
        .unwrap();
        assert!(biggest < 3000, "{biggest}");
        let got = lines(input.as_bytes(), 2000);
        let summary: Vec<_> = got.iter().map(|l| (l.1, l.2, l.3)).collect();
        assert_eq!(summary, [(1, false, 1), (50_000, true, 2), (1, false, 3), (50_000, true, 4)]);
        assert_eq!(got[1].0.len(), REJECT_RAW_CAP);
    }

    #[test]
    fn chunk_end_offsets_are_line_boundaries() {
        let long = "z".repeat(3000);
        let input = format!("one\ntwo\n{long}\nthree\nfour");
        for chunk in [1, 5, 100] {
            let mut ends = Vec::new();
            read_chunks(
                Trickle(input.as_bytes()),
                chunk,
                1000,
                || None,
                |c| ends.push(c.end_offset()),
            )
            .unwrap();
            assert_eq!(*ends.last().unwrap(), input.len() as u64);
            for end in &ends[..ends.len() - 1] {
                assert_eq!(input.as_bytes()[*end as usize - 1], b'\n', "chunk {chunk}: {ends:?}");
            }
        }
    }

    #[test]
    fn a_growing_input_hands_over_whole_lines_and_keeps_the_unfinished_one() {
        let mut texts = Vec::new();
        let mut each = |c: Chunk| {
            c.lines(100, |l| {
                texts.push((String::from_utf8_lossy(l.bytes).into_owned(), l.line_no))
            });
        };
        let mut reader = ChunkReader::new(1 << 20, 100, || None);
        reader.read_available(&mut &b"one\ntw"[..], &mut each).unwrap();
        assert_eq!(reader.handed_over(), 4);
        reader.read_available(&mut &b"o\nthr"[..], &mut each).unwrap();
        assert_eq!((reader.handed_over(), reader.bytes_read()), (8, 11));
        assert_eq!(reader.finish(&mut each), 11);
        assert_eq!(texts, [("one".into(), 1), ("two".into(), 2), ("thr".into(), 3)]);
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

    /// Found by fuzzing: a damaged line inside a run made the cut stop looking back, so a
    /// chunk ended mid-run and the run came out as two lines.
    #[test]
    fn a_damaged_line_inside_a_cri_run_does_not_split_it() {
        let input = b"2025-08-18T09:36:30Z stdout P {\"a\":\n\
            garbage\n\
            2025-08-18T09:36:30Z stdout F 1}\n";
        let got = lines(input, 1000);
        let texts: Vec<_> = got.iter().map(|l| (l.0.as_str(), l.3)).collect();
        assert_eq!(texts, [("garbage", 2), ("2025-08-18T09:36:30Z stdout F {\"a\":1}", 1)]);
    }

    #[test]
    fn overlong_cri_runs_are_one_too_long_line_and_unfinished_runs_are_flushed() {
        let chunk = "y".repeat(600);
        let run: String = (0..20)
            .map(|i| {
                format!("2025-08-18T09:36:30Z stdout {} {chunk}\n", if i < 19 { 'P' } else { 'F' })
            })
            .collect();
        let input = format!("before\n{run}after\n2025-08-18T09:36:31Z stdout P {{\"cut\"");
        let got = lines(input.as_bytes(), 5000);
        let summary: Vec<_> = got.iter().map(|l| (l.2, l.3)).collect();
        assert_eq!(summary, [(false, 1), (true, 2), (false, 22), (false, 23)]);
        assert_eq!(got[2].0, "after");
        assert_eq!(got[3].0, "2025-08-18T09:36:31Z stdout F {\"cut\"");
    }

    /// Found by fuzzing: a reader skipping an overlong stdout run ended it at the next `F` line
    /// of either stream, so a stderr line inside the run was lost into the reject.
    #[test]
    fn the_other_streams_lines_inside_an_overlong_run_survive() {
        let chunk = "y".repeat(600);
        let input = format!(
            "2025-08-18T09:36:30Z stdout P {chunk}\n\
             2025-08-18T09:36:30Z stderr F err line\n\
             2025-08-18T09:36:30Z stdout P {chunk}\n\
             2025-08-18T09:36:30Z stderr P err \n\
             2025-08-18T09:36:30Z stdout F {chunk}\n\
             2025-08-18T09:36:31Z stdout F next\n\
             2025-08-18T09:36:31Z stderr F joined\n"
        );
        let got = lines(input.as_bytes(), 1000);
        let summary: Vec<_> = got.iter().map(|l| (&l.0[21..], l.2, l.3)).collect();
        assert_eq!(summary[..2], [("stderr F err line", false, 2), (&got[1].0[21..], true, 1)]);
        assert_eq!(got[1].1, (600 * 3 + 30) as u64);
        assert_eq!(summary[2..], [("stdout F next", false, 6), ("stderr F err joined", false, 4)]);
    }

    /// A short run stays open while more than the cap of the other stream's lines go by:
    /// every line is good.
    #[test]
    fn a_run_open_across_more_than_the_cap_of_other_lines_is_still_joined() {
        let lines_between: String =
            (0..40).map(|i| format!("2025-08-18T09:36:30Z stdout F line {i:02}\n")).collect();
        let input = format!(
            "2025-08-18T09:36:30Z stderr P {{\"a\":\n{lines_between}2025-08-18T09:36:30Z stderr F 1}}\n"
        );
        let got = lines(input.as_bytes(), 500);
        assert_eq!(got.len(), 41);
        assert!(got.iter().all(|l| !l.2), "{got:?}");
        assert_eq!((got[39].0.as_str(), got[39].3), ("2025-08-18T09:36:30Z stdout F line 39", 41));
        assert_eq!((got[40].0.as_str(), got[40].3), ("2025-08-18T09:36:30Z stderr F {\"a\":1}", 1));
    }
}
