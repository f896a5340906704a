//! The decode step: a text data file's bytes checked as UTF-8. With `encoding = "utf8"` the first
//! invalid byte is an error naming the row and byte offset; with `"utf8-lossy"` invalid bytes
//! become U+FFFD and the rows that needed it are counted.

use std::borrow::Cow;

use crate::plan::spec::DataFormat;

/// Where the invalid bytes were: a data row (1-based, header excluded) and a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidUtf8 {
    pub row: usize,
    pub byte_offset: usize,
}

/// A decoded file: valid UTF-8 text, and the data rows that were repaired (1-based, sorted).
#[derive(Debug)]
pub struct Decoded<'a> {
    pub text: Cow<'a, str>,
    pub repaired_rows: Vec<usize>,
}

/// Byte offsets of every invalid UTF-8 sequence.
fn invalid_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        match std::str::from_utf8(&bytes[start..]) {
            Ok(_) => break,
            Err(error) => {
                let offset = start + error.valid_up_to();
                offsets.push(offset);
                start = offset + error.error_len().unwrap_or(bytes.len() - offset).max(1);
            }
        }
    }
    offsets
}

/// The start offset of every data row (header excluded), in order.
fn row_starts(bytes: &[u8], format: DataFormat) -> Vec<usize> {
    match format {
        DataFormat::Csv | DataFormat::Tsv => {
            // Records, not lines: a quoted field may span lines.
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .delimiter(if format == DataFormat::Tsv {
                    b'\t'
                } else {
                    b','
                })
                .from_reader(bytes);
            let mut starts = Vec::new();
            let mut record = csv::ByteRecord::new();
            loop {
                let position = reader.position().byte() as usize;
                match reader.read_byte_record(&mut record) {
                    Ok(true) => {
                        starts.push(record.position().map_or(position, |p| p.byte() as usize))
                    }
                    Ok(false) | Err(_) => break,
                }
            }
            starts
        }
        _ => {
            let mut starts = vec![0];
            starts.extend(
                memchr_newlines(bytes)
                    .map(|newline| newline + 1)
                    .filter(|&start| start < bytes.len()),
            );
            starts
        }
    }
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .map(|(index, _)| index)
}

/// The 1-based data row holding a byte offset (0 when it is in the header).
fn row_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&start| start <= offset)
}

/// Decodes a text file's bytes. `lossy` repairs invalid bytes; otherwise the first one is an error.
pub fn decode(bytes: &[u8], format: DataFormat, lossy: bool) -> Result<Decoded<'_>, InvalidUtf8> {
    let offsets = invalid_offsets(bytes);
    if offsets.is_empty() {
        let text = std::str::from_utf8(bytes).expect("checked above");
        return Ok(Decoded {
            text: Cow::Borrowed(text),
            repaired_rows: Vec::new(),
        });
    }
    let starts = row_starts(bytes, format);
    if !lossy {
        return Err(InvalidUtf8 {
            row: row_of(&starts, offsets[0]),
            byte_offset: offsets[0],
        });
    }
    let mut repaired_rows: Vec<usize> = offsets
        .iter()
        .map(|&offset| row_of(&starts, offset))
        .collect();
    repaired_rows.dedup();
    Ok(Decoded {
        text: String::from_utf8_lossy(bytes),
        repaired_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed() {
        let decoded = decode(b"text,label\nhi,a\n", DataFormat::Csv, false).unwrap();
        assert!(matches!(decoded.text, Cow::Borrowed(_)));
        assert!(decoded.repaired_rows.is_empty());
    }

    #[test]
    fn strict_decoding_names_the_row_and_offset() {
        let bytes = b"text,label\nfine,a\n\"two\nlines\",b\nbad \xff byte,c\n";
        let error = decode(bytes, DataFormat::Csv, false).unwrap_err();
        let offset = bytes.iter().position(|byte| *byte == 0xff).unwrap();
        assert_eq!(
            error,
            InvalidUtf8 {
                row: 3,
                byte_offset: offset
            }
        );
    }

    #[test]
    fn lossy_decoding_counts_repaired_rows() {
        let bytes = b"{\"text\": \"a\xff\xfe\"}\n{\"text\": \"ok\"}\n{\"text\": \"\xc3\"}\n";
        let decoded = decode(bytes, DataFormat::Jsonl, true).unwrap();
        assert_eq!(decoded.repaired_rows, [1, 3]);
        assert!(decoded.text.contains('\u{fffd}'));
    }
}
