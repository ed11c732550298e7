//! Java's text rules that the converters' output depends on: how `new String(bytes, UTF_8)`
//! replaces bad bytes, `String.trim()`, and `String.split(regex)`.

use std::borrow::Cow;

const REPL: char = '\u{FFFD}';

fn cont(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// UTF-8 decoding with replacement as the JDK's `String` constructor does it. It mostly agrees
/// with `String::from_utf8_lossy` (one U+FFFD per maximal invalid subpart), except that an
/// encoded surrogate (`ED A0 80`) is one U+FFFD, not three.
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(decode_slow(bytes)),
    }
}

fn decode_slow(src: &[u8]) -> String {
    let mut out = String::with_capacity(src.len() + 8);
    let len = src.len();
    let mut i = 0;
    while i < len {
        // Copy the valid run in one go.
        let valid = match std::str::from_utf8(&src[i..]) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        out.push_str(std::str::from_utf8(&src[i..i + valid]).expect("checked"));
        i += valid;
        if i >= len {
            break;
        }
        // `src[i]` starts an invalid sequence: replace it the way the JDK does.
        let b1 = src[i];
        i += 1;
        match b1 {
            0xC2..=0xDF => {
                // A lead byte whose continuation is missing or wrong.
                out.push(REPL);
            }
            0xE0..=0xEF => {
                if i + 1 < len {
                    let (b2, b3) = (src[i], src[i + 1]);
                    let bad_prefix = (b1 == 0xE0 && b2 & 0xE0 == 0x80) || !cont(b2);
                    if bad_prefix || !cont(b3) {
                        out.push(REPL);
                        if !bad_prefix {
                            i += 1;
                        }
                    } else {
                        // Well formed but a surrogate (ED A0..BF xx): one replacement for three bytes.
                        out.push(REPL);
                        i += 2;
                    }
                } else {
                    // One byte or none left.
                    out.push(REPL);
                    if i < len && !((b1 == 0xE0 && src[i] & 0xE0 == 0x80) || !cont(src[i])) {
                        // A truncated sequence at the end: swallowed with its lead byte.
                        i += 1;
                    }
                }
            }
            0xF0..=0xF7 => {
                let bad2 = |b2: u8| {
                    (b1 == 0xF0 && !(0x90..=0xBF).contains(&b2)) || (b1 == 0xF4 && b2 & 0xF0 != 0x80) || !cont(b2)
                };
                if i + 2 < len {
                    // Malformed (valid 4-byte sequences were copied above): consume what the JDK does.
                    out.push(REPL);
                    let b2 = src[i];
                    if b1 > 0xF4 || bad2(b2) {
                    } else if !cont(src[i + 1]) {
                        i += 1;
                    } else {
                        i += 2;
                    }
                } else if b1 > 0xF4 || (i < len && bad2(src[i])) {
                    out.push(REPL);
                } else {
                    out.push(REPL);
                    i += 1;
                    if i < len && !cont(src[i]) {
                        continue;
                    }
                    // The rest of a truncated sequence at the end goes with it.
                    i = len;
                }
            }
            _ => out.push(REPL),
        }
    }
    out
}

/// Java's `String.trim()`: strips every char up to U+0020 (controls included) at both ends.
pub fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// Java's `String.split(regex)`: a zero-width match at the very start gives no empty first
/// field, and trailing empty fields are removed (an input without any match is kept whole).
pub fn java_split<'a>(re: &regex::Regex, s: &'a str) -> Vec<&'a str> {
    let mut fields = Vec::new();
    let mut index = 0;
    let mut matched = false;
    // Java's `find()` sequence: after an empty match the search moves on one character; after
    // a non-empty one it may find an empty match where that one ended (`find_iter` would not).
    let mut from = 0;
    while from <= s.len() {
        let Some(m) = re.find_at(s, from) else { break };
        from = if m.is_empty() { m.end() + s[m.end()..].chars().next().map_or(1, char::len_utf8) } else { m.end() };
        if m.end() == 0 {
            continue;
        }
        matched = true;
        fields.push(&s[index..m.start()]);
        index = m.end();
    }
    if !matched {
        return vec![s];
    }
    fields.push(&s[index..]);
    while fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed() {
        assert!(matches!(decode("héllo ✓ 😀".as_bytes()), Cow::Borrowed(_)));
    }

    #[test]
    fn replacement_as_the_jdk_does_it() {
        let cases: &[(&[u8], &str)] = &[
            (b"a\xFFb", "a\u{FFFD}b"),
            (b"a\xC3(b", "a\u{FFFD}(b"),
            (b"\xC0\x80", "\u{FFFD}\u{FFFD}"),
            (b"x\xED\xA0\x80y", "x\u{FFFD}y"),
            (b"\xE2\x82\n", "\u{FFFD}\n"),
            (b"\xE2\x82", "\u{FFFD}"),
            (b"\xE0\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xF0\x9F\x98\n", "\u{FFFD}\n"),
            (b"\xF0\x9F\x98", "\u{FFFD}"),
            (b"\xF5\x80\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xF4\x90\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\x80", "\u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input), *want, "{input:?}");
        }
    }

    #[test]
    fn trim_is_javas() {
        assert_eq!(java_trim("\t\r\x01 a b \x1f\r"), "a b");
        assert_eq!(java_trim("\u{a0}a\u{3000}"), "\u{a0}a\u{3000}");
    }

    #[test]
    fn split_is_javas() {
        let comma = regex::Regex::new(",").unwrap();
        assert_eq!(java_split(&comma, "a,b,,"), vec!["a", "b"]);
        assert_eq!(java_split(&comma, ",a"), vec!["", "a"]);
        assert_eq!(java_split(&comma, ""), vec![""]);
        assert_eq!(java_split(&comma, ",,,"), Vec::<&str>::new());
        let empty = regex::Regex::new("|").unwrap();
        assert_eq!(java_split(&empty, "abc"), vec!["a", "b", "c"]);
        let commas = regex::Regex::new(",*").unwrap();
        assert_eq!(java_split(&commas, "a,b"), vec!["a", "", "b"]);
        assert_eq!(java_split(&commas, "a,,b,"), vec!["a", "", "b"]);
        let dot = regex::Regex::new(".").unwrap();
        assert_eq!(java_split(&dot, "abc"), Vec::<&str>::new());
    }
}
