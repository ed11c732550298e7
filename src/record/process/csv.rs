//! CSVTOJSON: the columns of a line named by `customFieldNames`. By default exactly as the
//! Java agent (`String.split` on a regular expression, no quoting); `csvMode: RFC4180` reads
//! quoted fields with the `csv` crate.

use regex::Regex;

use super::json::{Field, Object};
use super::text::java_split;
use crate::config::JsonFormat;

#[derive(Debug)]
pub enum Splitter {
    Regex(Regex),
    Quoted(u8),
}

#[derive(Debug)]
pub struct CsvToJson {
    pub fields: Vec<String>,
    pub splitter: Splitter,
    pub json: JsonFormat,
}

impl CsvToJson {
    pub fn convert(&self, record: &str) -> String {
        let line = record.strip_suffix('\n').unwrap_or(record);
        match &self.splitter {
            Splitter::Regex(re) => {
                let columns = java_split(re, line);
                self.object(|i| columns.get(i).copied())
            }
            Splitter::Quoted(delimiter) => {
                let row = quoted_row(line, *delimiter);
                self.object(|i| row.get(i))
            }
        }
    }

    fn object<'a>(&'a self, column: impl Fn(usize) -> Option<&'a str>) -> String {
        let mut object = Object::with_capacity(self.fields.len());
        for (i, name) in self.fields.iter().enumerate() {
            object.put(name, column(i).map_or(Field::Null, Field::Str));
        }
        object.to_record(self.json)
    }
}

/// The first row of `line` (one record is one row; a quoted field may hold line breaks).
fn quoted_row(line: &str, delimiter: u8) -> csv::StringRecord {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(line.as_bytes());
    let mut row = csv::StringRecord::new();
    match reader.read_record(&mut row) {
        Ok(true) => row,
        // An empty line, or bytes the reader rejects: one empty column, as the Java split gives.
        _ => csv::StringRecord::from(vec![""]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn java(fields: &[&str], delimiter: &str) -> CsvToJson {
        CsvToJson {
            fields: names(fields),
            splitter: Splitter::Regex(Regex::new(delimiter).unwrap()),
            json: JsonFormat::Compact,
        }
    }

    #[test]
    fn as_the_java_agent() {
        let c = java(&["a", "b", "c"], ",");
        assert_eq!(c.convert("1,2,3\n"), "{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"}\n");
        // Missing and trailing empty columns are null; an inner empty column is "".
        assert_eq!(c.convert("1\n"), "{\"a\":\"1\",\"b\":null,\"c\":null}\n");
        assert_eq!(c.convert("1,2,\n"), "{\"a\":\"1\",\"b\":\"2\",\"c\":null}\n");
        assert_eq!(c.convert(",,3\n"), "{\"a\":\"\",\"b\":\"\",\"c\":\"3\"}\n");
        assert_eq!(c.convert("\n"), "{\"a\":\"\",\"b\":null,\"c\":null}\n");
        // Extra columns are dropped, quotes are not special, `\r` stays.
        assert_eq!(c.convert("1,\"x,y\",3,4\r\n"), "{\"a\":\"1\",\"b\":\"\\\"x\",\"c\":\"y\\\"\"}\n");
        assert_eq!(c.convert("1,2,3\r\n"), "{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\\r\"}\n");
        // Unicode.
        assert_eq!(c.convert("zürich,東京,😀\n"), "{\"a\":\"zürich\",\"b\":\"東京\",\"c\":\"😀\"}\n");
    }

    #[test]
    fn the_delimiter_is_a_regex() {
        assert_eq!(java(&["a", "b"], "\t").convert("x\ty\n"), "{\"a\":\"x\",\"b\":\"y\"}\n");
        assert_eq!(java(&["a", "b"], r"\|").convert("x|y\n"), "{\"a\":\"x\",\"b\":\"y\"}\n");
        assert_eq!(java(&["a", "b"], "|").convert("xy\n"), "{\"a\":\"x\",\"b\":\"y\"}\n");
        assert_eq!(java(&["a", "b"], ".").convert("xy\n"), "{\"a\":null,\"b\":null}\n");
        assert_eq!(java(&["a", "b"], ";+").convert("x;;;y\n"), "{\"a\":\"x\",\"b\":\"y\"}\n");
    }

    #[test]
    fn duplicate_names_keep_the_first_place_and_the_last_value() {
        assert_eq!(java(&["a", "b", "a"], ",").convert("1,2,3\n"), "{\"a\":\"3\",\"b\":\"2\"}\n");
    }

    #[test]
    fn quoted_mode() {
        let c = CsvToJson {
            fields: names(&["id", "text", "n", "x"]),
            splitter: Splitter::Quoted(b','),
            json: JsonFormat::Compact,
        };
        assert_eq!(
            c.convert("7,\"hello, \"\"world\"\"\",,\n"),
            "{\"id\":\"7\",\"text\":\"hello, \\\"world\\\"\",\"n\":\"\",\"x\":\"\"}\n"
        );
        assert_eq!(
            c.convert("1,\"two\nlines\"\r\n"),
            "{\"id\":\"1\",\"text\":\"two\\nlines\",\"n\":null,\"x\":null}\n"
        );
        assert_eq!(c.convert("\n"), "{\"id\":\"\",\"text\":null,\"n\":null,\"x\":null}\n");
        let tab =
            CsvToJson { fields: names(&["a", "b"]), splitter: Splitter::Quoted(b'\t'), json: JsonFormat::PrettyPrint };
        assert_eq!(tab.convert("\"a\tb\"\tc\n"), "{\n  \"a\" : \"a\\tb\",\n  \"b\" : \"c\"\n}\n");
    }
}
