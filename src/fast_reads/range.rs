//! The `Range` header of a blob read, as 2.8 (Go's `http.ServeContent`)
//! reads it, for the one case regate answers itself: a single satisfiable
//! byte range. Everything else (several ranges, a range that does not
//! overlap the blob, one Go's parser would read another way: spaces, signs,
//! a zero-length suffix, an empty blob) is [`Ranged::Forward`], and the
//! registry answers it (416 and multipart included) exactly as it does.

/// What to send of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// No `Range`: all of it, 200.
    Whole,
    /// Bytes `start..=end`, 206 with `Content-Range`.
    Part { start: u64, end: u64 },
    /// Left to the registry.
    Forward,
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `values`: every `Range` header of the request.
pub fn parse<'a>(mut values: impl Iterator<Item = &'a [u8]>, size: u64) -> Ranged {
    let Some(first) = values.next() else {
        return Ranged::Whole;
    };
    if values.next().is_some() || size == 0 {
        return Ranged::Forward;
    }
    let Some(spec) = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.strip_prefix("bytes="))
    else {
        return Ranged::Forward;
    };
    let Some((start, end)) = spec.split_once('-') else {
        return Ranged::Forward;
    };
    match (start, end) {
        // The last `n` bytes.
        ("", n) => match number(n) {
            Some(n) if n > 0 => Ranged::Part {
                start: size - n.min(size),
                end: size - 1,
            },
            _ => Ranged::Forward,
        },
        (s, "") => match number(s) {
            Some(s) if s < size => Ranged::Part {
                start: s,
                end: size - 1,
            },
            _ => Ranged::Forward,
        },
        (s, e) => match (number(s), number(e)) {
            (Some(s), Some(e)) if s < size && s <= e => Ranged::Part {
                start: s,
                end: e.min(size - 1),
            },
            _ => Ranged::Forward,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::none(&[], Ranged::Whole)]
    #[case::first_bytes(&["bytes=0-3"], Ranged::Part { start: 0, end: 3 })]
    #[case::open_end(&["bytes=4-"], Ranged::Part { start: 4, end: 15 })]
    #[case::past_the_end_is_clipped(&["bytes=0-100"], Ranged::Part { start: 0, end: 15 })]
    #[case::suffix(&["bytes=-4"], Ranged::Part { start: 12, end: 15 })]
    #[case::suffix_longer_than_the_blob(&["bytes=-40"], Ranged::Part { start: 0, end: 15 })]
    #[case::zero_suffix_is_odd_in_go(&["bytes=-0"], Ranged::Forward)]
    #[case::no_overlap_is_a_416_of_the_registry(&["bytes=16-"], Ranged::Forward)]
    #[case::reversed(&["bytes=5-2"], Ranged::Forward)]
    #[case::several(&["bytes=0-1,3-4"], Ranged::Forward)]
    #[case::not_bytes(&["items=0-1"], Ranged::Forward)]
    #[case::spaces(&["bytes= 0-1"], Ranged::Forward)]
    #[case::sign(&["bytes=+0-1"], Ranged::Forward)]
    #[case::garbage(&["bytes=abc"], Ranged::Forward)]
    #[case::two_headers(&["bytes=0-1", "bytes=2-3"], Ranged::Forward)]
    fn ranges_of_a_16_byte_blob(#[case] values: &[&str], #[case] want: Ranged) {
        assert_eq!(parse(values.iter().map(|v| v.as_bytes()), 16), want);
    }

    #[test]
    fn any_range_of_an_empty_blob_is_left_to_the_registry() {
        assert_eq!(
            parse([b"bytes=0-".as_slice()].into_iter(), 0),
            Ranged::Forward
        );
        assert_eq!(parse(std::iter::empty(), 0), Ranged::Whole);
    }
}
