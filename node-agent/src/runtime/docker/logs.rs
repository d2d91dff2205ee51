//! The engine's log frames turned into lines, and the engine's timestamps (RFC 3339, which the
//! logs and `inspect` share) turned into times.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::runtime::{LogLine, LogStream, Result, cut_marker};

/// The lines of a container's log `frames` (as `logs` requests them: both streams, with
/// timestamps), each at most `max_line_bytes` long (see [`crate::runtime::cut_line`]). An
/// error from `frames` ends the lines, after the unfinished lines before it.
pub(super) fn lines(
    frames: BoxStream<'static, Result<LogOutput>>,
    max_line_bytes: usize,
) -> BoxStream<'static, Result<LogLine>> {
    let state = LogState { frames, splitter: LineSplitter::new(max_line_bytes), ready: VecDeque::new(), done: false };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(line) = state.ready.pop_front() {
                return Some((line, state));
            }
            if state.done {
                return None;
            }
            match state.frames.next().await {
                Some(Ok(frame)) => state.ready.extend(state.splitter.push(frame).into_iter().map(Ok)),
                Some(Err(e)) => {
                    state.done = true;
                    state.ready.extend(state.splitter.finish().into_iter().map(Ok));
                    state.ready.push_back(Err(e));
                }
                None => {
                    state.done = true;
                    state.ready.extend(state.splitter.finish().into_iter().map(Ok));
                }
            }
        }
    })
    .boxed()
}

/// The state of a log stream being turned into lines.
struct LogState {
    frames: BoxStream<'static, Result<LogOutput>>,
    splitter: LineSplitter,
    ready: VecDeque<Result<LogLine>>,
    done: bool,
}

/// Turns the engine's log frames into lines. A frame is one log entry with its timestamp in
/// front (`2024-05-01T12:00:00.123456789Z message\n`); a line longer than the engine's buffer
/// (16 KiB) comes as several entries, so text without a newline waits, per stream, for the
/// rest of its line, and the line keeps the timestamp of its first part.
///
/// What waits is bounded: a line that grows past `max` bytes is sent at once, cut there and
/// marked, and the rest of it, up to its newline, is dropped. Output that never ends a line
/// costs at most `max` bytes per stream.
struct LineSplitter {
    /// The unfinished line of stdout and of stderr.
    partial: [Option<(Vec<u8>, Option<SystemTime>)>; 2],
    /// Whether the rest of the current line of the stream is being dropped (it was cut).
    dropping: [bool; 2],
    max: usize,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter { partial: [None, None], dropping: [false; 2], max: max.max(1) }
    }

    fn push(&mut self, frame: LogOutput) -> Vec<LogLine> {
        let (stream, bytes) = match frame {
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            // A container with a TTY sends raw output (Console); Stratus creates none, but an
            // adopted one may have it. Stdin is never echoed; keep it with stdout rather than lose it.
            LogOutput::StdOut { message } | LogOutput::Console { message } | LogOutput::StdIn { message } => {
                (LogStream::Stdout, message)
            }
        };
        let (timestamp, mut text) = split_timestamp(&bytes);
        let index = stream_index(stream);
        let (slot, dropping) = (&mut self.partial[index], &mut self.dropping[index]);
        let mut lines = Vec::new();
        while !text.is_empty() {
            let newline = text.iter().position(|b| *b == b'\n');
            if *dropping {
                // The rest of a line that was cut: gone, up to its end.
                *dropping = newline.is_none();
                text = newline.map_or(&[][..], |n| &text[n + 1..]);
                continue;
            }
            let (mut line, started) = slot.take().unwrap_or_else(|| (Vec::new(), timestamp));
            let part = newline.unwrap_or(text.len());
            let room = self.max.saturating_sub(line.len());
            if part > room {
                // Cut where a character starts, so that the kept part stays valid text.
                let mut end = room;
                while end > 0 && text[end] & 0xc0 == 0x80 {
                    end -= 1;
                }
                line.extend_from_slice(&text[..end]);
                let mut cut = log_line(stream, line, started);
                cut.line.push_str(&cut_marker(self.max));
                lines.push(cut);
                *dropping = newline.is_none();
                text = newline.map_or(&[][..], |n| &text[n + 1..]);
                continue;
            }
            line.extend_from_slice(&text[..part]);
            match newline {
                Some(n) => {
                    lines.push(log_line(stream, line, started));
                    text = &text[n + 1..];
                }
                None => {
                    *slot = Some((line, started));
                    text = &[];
                }
            }
        }
        lines
    }

    /// The unfinished lines, once no more frames will come.
    fn finish(&mut self) -> Vec<LogLine> {
        [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .filter_map(|stream| {
                let (line, started) = self.partial[stream_index(stream)].take()?;
                Some(log_line(stream, line, started))
            })
            .collect()
    }
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn log_line(stream: LogStream, mut line: Vec<u8>, timestamp: Option<SystemTime>) -> LogLine {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    LogLine { stream, line: String::from_utf8_lossy(&line).into_owned(), timestamp }
}

/// Splits the engine's timestamp off the front of a log entry; an entry without one is kept
/// whole.
fn split_timestamp(entry: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(space) = entry.iter().take(64).position(|b| *b == b' ') else { return (None, entry) };
    let parsed = std::str::from_utf8(&entry[..space]).ok().and_then(parse_time);
    match parsed {
        Some(time) => (Some(time), &entry[space + 1..]),
        None => (None, entry),
    }
}

/// Parses an RFC 3339 time as the engine writes it (`2024-05-01T12:00:00.123456789Z`, or with a
/// `±hh:mm` offset). Docker's zero time (`0001-01-01T00:00:00Z`), used for "never", and any
/// other time before 1970 give `None`.
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None }
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|(at, sep)| text.as_bytes().get(*at).is_some_and(|b| b.eq_ignore_ascii_case(sep))) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, padded on the right.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10_u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let offset = (h1 * 10 + h2) * 3600 + (m1 * 10 + m2) * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn at(seconds: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(seconds, nanos))
    }

    #[test]
    fn times_parse_as_the_engine_writes_them() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_time("2026-11-25T07:56:24.673016677Z"), at(1_795_593_384, 673_016_677));
        assert_eq!(parse_time("2000-02-29T12:00:00.5Z"), at(951_825_600, 500_000_000));
        assert_eq!(parse_time("2000-02-29T14:00:00+02:00"), at(951_825_600, 0));
        assert_eq!(parse_time("2000-02-29T10:30:00.000000000123-01:30"), at(951_825_600, 0));
    }

    #[test]
    fn the_zero_time_and_garbage_are_no_time() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "2024",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+1:00",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    fn out(text: &str) -> LogOutput {
        LogOutput::StdOut { message: Bytes::copy_from_slice(text.as_bytes()) }
    }

    fn err(text: &str) -> LogOutput {
        LogOutput::StdErr { message: Bytes::copy_from_slice(text.as_bytes()) }
    }

    fn line(stream: LogStream, text: &str, timestamp: Option<SystemTime>) -> LogLine {
        LogLine { stream, line: text.to_owned(), timestamp }
    }

    #[test]
    fn log_entries_become_tagged_lines_with_their_timestamps() {
        let mut splitter = LineSplitter::new(1 << 20);
        assert_eq!(
            splitter.push(out("1970-01-01T00:00:01.5Z hello\n")),
            [line(LogStream::Stdout, "hello", at(1, 500_000_000))]
        );
        assert_eq!(splitter.push(err("1970-01-01T00:00:02Z oops\r\n")), [line(LogStream::Stderr, "oops", at(2, 0))]);
        // Several lines in one entry share its timestamp; an entry without one is kept whole.
        assert_eq!(
            splitter.push(out("1970-01-01T00:00:03Z a\nb\n")),
            [line(LogStream::Stdout, "a", at(3, 0)), line(LogStream::Stdout, "b", at(3, 0))]
        );
        assert_eq!(splitter.push(out("no timestamp here\n")), [line(LogStream::Stdout, "no timestamp here", None)]);
        assert_eq!(splitter.push(out("1970-01-01T00:00:04Z \n")), [line(LogStream::Stdout, "", at(4, 0))]);
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn a_long_line_split_into_entries_is_joined_per_stream() {
        let mut splitter = LineSplitter::new(1 << 20);
        assert!(splitter.push(out("1970-01-01T00:00:01Z first half, ")).is_empty());
        assert_eq!(
            splitter.push(err("1970-01-01T00:00:02Z meanwhile\n")),
            [line(LogStream::Stderr, "meanwhile", at(2, 0))]
        );
        // A multi-byte character cut between entries survives.
        assert!(
            splitter
                .push(LogOutput::StdOut { message: Bytes::from_static(b"1970-01-01T00:00:03Z caf\xc3") })
                .is_empty()
        );
        assert_eq!(
            splitter.push(LogOutput::StdOut { message: Bytes::from_static(b"1970-01-01T00:00:04Z \xa9 end\n") }),
            [line(LogStream::Stdout, "first half, café end", at(1, 0))]
        );
        assert!(splitter.push(err("1970-01-01T00:00:05Z no newline at the end")).is_empty());
        assert_eq!(splitter.finish(), [line(LogStream::Stderr, "no newline at the end", at(5, 0))]);
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn a_line_past_the_limit_is_cut_marked_and_its_rest_dropped() {
        let mut splitter = LineSplitter::new(8);
        let cut = |text: &str, at| line(LogStream::Stdout, &format!("{text}{}", cut_marker(8)), at);
        // Output that never ends a line: cut as soon as it is too long, then dropped, so that
        // nothing grows however much more comes.
        assert!(splitter.push(out("1970-01-01T00:00:01Z 12345")).is_empty());
        assert_eq!(splitter.push(out("1970-01-01T00:00:02Z 6789abc")), [cut("12345678", at(1, 0))]);
        for _ in 0..1000 {
            assert!(splitter.push(out("1970-01-01T00:00:03Z 0123456789abcdef")).is_empty());
        }
        assert!(splitter.partial.iter().all(Option::is_none), "the dropped rest was kept");
        // Its end, and what follows: lines again; stderr was never affected.
        assert_eq!(splitter.push(out("1970-01-01T00:00:04Z end\nnext\n")), [line(LogStream::Stdout, "next", at(4, 0))]);
        assert_eq!(splitter.push(err("1970-01-01T00:00:05Z short\n")), [line(LogStream::Stderr, "short", at(5, 0))]);
        // Several long lines in one entry; exactly the limit is not cut.
        assert_eq!(
            splitter.push(out("1970-01-01T00:00:06Z 0123456789\n01234567\nabcdefghij\n")),
            [cut("01234567", at(6, 0)), line(LogStream::Stdout, "01234567", at(6, 0)), cut("abcdefgh", at(6, 0))]
        );
        // A character is never split: "é" is two bytes, the cut comes before it.
        assert_eq!(splitter.push(out("1970-01-01T00:00:07Z 1234567é\n")), [cut("1234567", at(7, 0))]);
        assert!(splitter.finish().is_empty());
    }
}
