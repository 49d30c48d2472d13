//! Rows of Parquet files (Hugging Face datasets' native format) as JSON objects.
//!
//! Built on the `parquet` crate's record API without its `arrow` feature: a file is read one
//! row group at a time, and within a row group page by page (the crate buffers up to 1,024
//! values of each projected leaf column), never whole.
//!
//! JSON mapping of a value:
//! - strings (UTF8/STRING, ENUM, JSON annotations) -> strings; plain BYTE_ARRAY and
//!   FIXED_LEN_BYTE_ARRAY -> a string when valid UTF-8, else an array of the byte values;
//! - integers of every width, signed and unsigned -> numbers (exact, up to u64/i64);
//! - floats (f16, f32, f64) -> numbers; NaN and infinities, which JSON lacks -> null;
//! - booleans -> booleans; null -> null;
//! - lists (the 3-level LIST encoding pyarrow writes, the legacy 2-level ones, and bare
//!   repeated fields) -> arrays; structs -> objects; maps -> objects (a key that is not a
//!   string is written as its JSON text);
//! - DECIMAL -> a string of its exact value ("-0.05"); DATE -> "YYYY-MM-DD"; TIME(MILLIS,
//!   MICROS) -> "HH:MM:SS[.ffffff]"; TIMESTAMP(MILLIS, MICROS) and INT96 ->
//!   "YYYY-MM-DDTHH:MM:SS[.ffffff]", no zone (UTC for zone-adjusted columns): the forms of
//!   Python's `isoformat()`. TIMESTAMP(NANOS) and TIME(NANOS), which the record API does not
//!   decode, come out as their raw integer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};

/// Parquet's magic number, at both ends of a file (`PARE` marks an encrypted footer).
const MAGIC: &[u8; 4] = b"PAR1";
/// Deeper nesting than this in the projected schema is refused (the crate's record reader
/// recurses once a level).
const MAX_DEPTH: usize = 64;
/// Errors of the crate can quote whole values; ours keep this many characters of one.
const MAX_ERROR_CHARS: usize = 300;

/// Streams the rows of `path`, one row group at a time (bounded memory: never the whole file),
/// projected to `columns` (top-level column names; empty: every column), calling
/// `sink(row_index, object)` with the row's index in the file and a JSON object of those
/// columns. An error of `sink` stops the stream and is returned as it is.
///
/// Errors name the file: an unknown column (with the columns the file has); a file that is not
/// Parquet, is truncated, encrypted or corrupt (what was wrong, and where: the row group and
/// row). The footer's length and every projected column chunk's byte range are checked against
/// the file's size before the crate reads them, and a panic inside the crate on a crafted file
/// comes back as an error.
pub fn for_each_row(
    path: &Path,
    columns: &[&str],
    sink: &mut dyn FnMut(usize, Value) -> Result<(), String>,
) -> Result<(), String> {
    let shown = path.display();
    crate::error::regular_file(path).map_err(|e| e.to_string())?;
    let mut file = File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let file_len = file.metadata().map_err(|e| format!("{shown}: cannot stat: {e}"))?.len();
    check_envelope(&mut file, file_len).map_err(|e| format!("{shown}: {e}"))?;

    let reader =
        guarded(|| SerializedFileReader::new(file)).map_err(|e| format!("{shown}: invalid Parquet metadata: {e}"))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema();

    // The projection: the asked top-level fields, in the file's order.
    let fields = schema.get_fields();
    for &name in columns {
        if !fields.iter().any(|f| f.name() == name) {
            let have: Vec<&str> = fields.iter().map(|f| f.name()).collect();
            return Err(format!("{shown}: no column `{name}`; the file has columns: {}", have.join(", ")));
        }
    }
    let picked: Vec<Arc<Type>> =
        fields.iter().filter(|f| columns.is_empty() || columns.contains(&f.name())).cloned().collect();
    if picked.is_empty() {
        return Err(format!("{shown}: the file has no columns"));
    }
    for f in &picked {
        if depth(f) > MAX_DEPTH {
            return Err(format!("{shown}: column `{}` is nested more than {MAX_DEPTH} levels deep", f.name()));
        }
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(picked)
        .build()
        .map_err(|e| format!("{shown}: cannot project columns: {e}"))?;
    let top: Vec<&str> = projection.get_fields().iter().map(|f| f.name()).collect();

    let mut row_index = 0usize;
    for rg in 0..reader.num_row_groups() {
        let rg_meta = meta.row_group(rg);
        let rows_in_group = usize::try_from(rg_meta.num_rows())
            .map_err(|_| format!("{shown}: row group {rg}: negative row count {}", rg_meta.num_rows()))?;
        for col in rg_meta.columns() {
            let path_parts = col.column_path().parts();
            if !top.iter().any(|t| path_parts.first().map(String::as_str) == Some(*t)) {
                continue;
            }
            let start = col.dictionary_page_offset().unwrap_or(col.data_page_offset());
            let len = col.compressed_size();
            let end = u64::try_from(start).ok().zip(u64::try_from(len).ok()).and_then(|(s, l)| s.checked_add(l));
            if end.is_none_or(|end| end > file_len) {
                return Err(format!(
                    "{shown}: row group {rg}: column chunk `{}` claims bytes {start}..+{len}, \
                     outside the file's {file_len} bytes (truncated or corrupt)",
                    path_parts.join(".")
                ));
            }
        }

        let at = |row: usize| format!("{shown}: row group {rg}, row {row}");
        let group = guarded(|| reader.get_row_group(rg)).map_err(|e| format!("{}: {e}", at(row_index)))?;
        let mut rows = guarded(|| RowIter::from_row_group(Some(projection.clone()), group.as_ref()))
            .map_err(|e| format!("{}: {e}", at(row_index)))?;
        let mut seen = 0usize;
        while let Some(row) = guarded(|| rows.next().transpose()).map_err(|e| format!("{}: {e}", at(row_index)))? {
            let value = row_to_json(&row).map_err(|e| format!("{}: {e}", at(row_index)))?;
            sink(row_index, value)?;
            row_index += 1;
            seen += 1;
        }
        if seen != rows_in_group {
            return Err(format!("{shown}: row group {rg}: {seen} rows read, the metadata says {rows_in_group}"));
        }
    }
    Ok(())
}

/// Expands a glob over shard file names: `*` (any run of characters) and `?` (one character)
/// in the FILE NAME component only (`data/train-*.parquet`, `shards/part-0000?.parquet`),
/// matching regular files (and links to them), sorted by name. As in a shell, a wildcard does
/// not match a leading `.`. A pattern without a wildcard names one file, which must exist.
/// Errors: no match (naming the pattern), a wildcard in a directory component, `**`, an
/// unreadable directory.
pub fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let shown = pattern.display();
    let name = pattern
        .file_name()
        .ok_or_else(|| format!("glob `{shown}`: no file name to match"))?
        .to_str()
        .ok_or_else(|| format!("glob `{shown}`: the file name is not UTF-8"))?;
    let dir = pattern.parent().unwrap_or(Path::new(""));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!("glob `{shown}`: wildcards are allowed only in the file name, not in directories"));
    }
    if name.contains("**") {
        return Err(format!("glob `{shown}`: `**` is not supported (one directory only)"));
    }
    if !name.contains(['*', '?']) {
        return if pattern.is_file() {
            Ok(vec![pattern.to_path_buf()])
        } else {
            Err(format!("glob `{shown}`: no such file"))
        };
    }
    let listed = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let entries =
        std::fs::read_dir(listed).map_err(|e| format!("glob `{shown}`: cannot list {}: {e}", listed.display()))?;
    let pat: Vec<char> = name.chars().collect();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("glob `{shown}`: cannot list {}: {e}", listed.display()))?;
        let file_name = entry.file_name();
        let text: Vec<char> = file_name.to_string_lossy().chars().collect();
        if text.first() == Some(&'.') && pat.first() != Some(&'.') {
            continue;
        }
        let path = dir.join(&file_name);
        if wildcard_match(&pat, &text) && path.is_file() {
            found.push(path);
        }
    }
    if found.is_empty() {
        return Err(format!("glob `{shown}`: no file matches"));
    }
    found.sort();
    Ok(found)
}

/// `*` and `?` matching, backtracking to the last `*` only (O(pattern x name) at worst).
fn wildcard_match(pat: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern index after '*', text index)
    while t < text.len() {
        if p < pat.len() && (pat[p] == '?' || (pat[p] != '*' && pat[p] == text[t])) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == '*' {
            star = Some((p + 1, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

/// Checks the magic numbers and the footer's length against the file's size, before the
/// crate reads (and allocates for) the footer.
fn check_envelope(file: &mut File, file_len: u64) -> Result<(), String> {
    if file_len < 12 {
        return Err(format!("not a Parquet file: {file_len} bytes, fewer than the 12 of its magic numbers and footer"));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    file.read_exact(&mut head)
        .and_then(|_| file.seek(SeekFrom::End(-8)))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| format!("cannot read: {e}"))?;
    if &head != MAGIC {
        return Err("not a Parquet file: it does not start with the magic number PAR1".into());
    }
    if &tail[4..] == b"PARE" {
        return Err("encrypted Parquet files are not supported".into());
    }
    if &tail[4..] != MAGIC {
        return Err("truncated or not a Parquet file: it does not end with the magic number PAR1".into());
    }
    let footer_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if footer_len > file_len - 12 {
        return Err(format!(
            "corrupt or truncated Parquet file: its footer claims {footer_len} bytes of metadata, \
             more than the {file_len}-byte file holds"
        ));
    }
    Ok(())
}

/// Runs a call into the crate, turning its error, or a panic on a crafted file, into ours.
fn guarded<T>(f: impl FnOnce() -> parquet::errors::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(clip(&e.to_string())),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(format!("the Parquet reader panicked on corrupt data: {}", clip(&why)))
        }
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn depth(t: &Type) -> usize {
    if t.is_group() { 1 + t.get_fields().iter().map(|f| depth(f)).max().unwrap_or(0) } else { 1 }
}

fn row_to_json(row: &Row) -> Result<Value, String> {
    let mut obj = Map::new();
    for (name, field) in row.get_column_iter() {
        obj.insert(name.clone(), field_to_json(field)?);
    }
    Ok(Value::Object(obj))
}

fn field_to_json(field: &Field) -> Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => (*n).into(),
        Field::Short(n) => (*n).into(),
        Field::Int(n) => (*n).into(),
        Field::Long(n) => (*n).into(),
        Field::UByte(n) => (*n).into(),
        Field::UShort(n) => (*n).into(),
        Field::UInt(n) => (*n).into(),
        Field::ULong(n) => (*n).into(),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Decimal(d) => Value::String(decimal_string(d.data(), d.scale())?),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Array(b.data().iter().map(|&x| x.into()).collect()),
        },
        Field::Date(days) => Value::String(date_string(i64::from(*days))),
        Field::TimeMillis(ms) => Value::String(time_string(i64::from(*ms) * 1000)),
        Field::TimeMicros(us) => Value::String(time_string(*us)),
        Field::TimestampMillis(ms) => Value::String(timestamp_string(ms.saturating_mul(1000))),
        Field::TimestampMicros(us) => Value::String(timestamp_string(*us)),
        Field::Group(row) => row_to_json(row)?,
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_to_json).collect::<Result<_, _>>()?),
        Field::MapInternal(map) => {
            let mut obj = Map::new();
            for (k, v) in map.entries() {
                let key = match field_to_json(k)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, field_to_json(v)?);
            }
            Value::Object(obj)
        }
    })
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The exact decimal text of a big-endian two's-complement unscaled value.
fn decimal_string(be: &[u8], scale: i32) -> Result<String, String> {
    if be.len() > 32 {
        return Err(format!("DECIMAL of {} bytes (more than 32) is not supported", be.len()));
    }
    if !(0..=200).contains(&scale) {
        return Err(format!("DECIMAL with scale {scale} is not supported"));
    }
    let negative = be.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = be.to_vec();
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in mag.iter_mut().rev() {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    // Repeated division by 10 of the base-256 digits.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (int, frac) = digits.split_at(digits.len() - scale);
    let mut s = String::with_capacity(digits.len() + 2);
    if negative {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(int).expect("ASCII digits"));
    if scale > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(frac).expect("ASCII digits"));
    }
    Ok(s)
}

/// Days since 1970-01-01 -> "YYYY-MM-DD" (proleptic Gregorian; Hinnant's civil_from_days).
fn date_string(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Microseconds since midnight -> "HH:MM:SS" or "HH:MM:SS.ffffff" (Python's isoformat).
fn time_string(us: i64) -> String {
    let (secs, micro) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
    let hms = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if micro == 0 { hms } else { format!("{hms}.{micro:06}") }
}

/// Microseconds since the Unix epoch -> "YYYY-MM-DDTHH:MM:SS[.ffffff]".
fn timestamp_string(us: i64) -> String {
    let (days, in_day) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
    format!("{}T{}", date_string(days), time_string(in_day))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parquet");

    fn fixture(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn read(name: &str, columns: &[&str]) -> Result<Vec<Value>, String> {
        let mut rows = Vec::new();
        for_each_row(&fixture(name), columns, &mut |i, v| {
            assert_eq!(i, rows.len(), "row indices run 0, 1, 2, ...");
            rows.push(v);
            Ok(())
        })?;
        Ok(rows)
    }

    /// pyarrow's `to_pylist()` of each file, written by scripts/make_parquet_fixture.py.
    fn expected(name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
        let all: Value = serde_json::from_str(&text).unwrap();
        all[name].as_array().unwrap_or_else(|| panic!("no {name} in expected.json")).clone()
    }

    fn only(rows: &[Value], columns: &[&str]) -> Vec<Value> {
        rows.iter().map(|r| Value::Object(columns.iter().map(|c| (c.to_string(), r[*c].clone())).collect())).collect()
    }

    #[test]
    fn chat_rows_match_pyarrow_in_every_compression() {
        for name in ["chat.parquet", "chat_zstd.parquet", "chat_gzip.parquet", "chat_lz4.parquet", "chat_plain.parquet"]
        {
            let want = expected(name);
            assert_eq!(want.len(), 7);
            assert_eq!(read(name, &["messages", "id"]).unwrap(), want, "{name}");
            assert_eq!(read(name, &[]).unwrap(), want, "{name}: all columns");
            assert_eq!(read(name, &["messages"]).unwrap(), only(&want, &["messages"]), "{name}");
            assert_eq!(read(name, &["id"]).unwrap(), only(&want, &["id"]), "{name}");
        }
    }

    #[test]
    fn chat_messages_come_out_as_role_content_objects() {
        let rows = read("chat.parquet", &["messages"]).unwrap();
        assert_eq!(
            rows[0]["messages"],
            serde_json::json!([
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ])
        );
        assert_eq!(rows[1]["messages"][0]["content"].as_str().unwrap().chars().filter(|c| *c == '🚀').count(), 1);
        assert_eq!(rows[2]["messages"], serde_json::json!([]));
        // Seven rows in four row groups of two: the last group holds one row.
        assert_eq!(rows.len(), 7);
    }

    #[test]
    fn nulls_and_other_types_match_pyarrow() {
        for name in ["nulls.parquet", "types.parquet"] {
            assert_eq!(read(name, &[]).unwrap(), expected(name), "{name}");
        }
        let rows = read("nulls.parquet", &["text", "messages"]).unwrap();
        assert_eq!(rows[1], serde_json::json!({"text": null, "messages": null}));
        assert_eq!(rows[2]["messages"][0], Value::Null);
        assert_eq!(rows[2]["messages"][1], serde_json::json!({"role": "user", "content": null}));
    }

    #[test]
    fn sink_error_stops_the_stream() {
        let mut calls = 0;
        let err = for_each_row(&fixture("chat.parquet"), &["id"], &mut |i, _| {
            calls += 1;
            if i == 2 { Err("enough".into()) } else { Ok(()) }
        })
        .unwrap_err();
        assert_eq!((err.as_str(), calls), ("enough", 3));
    }

    #[test]
    fn glob_finds_the_text_shards_in_order() {
        let shards = expand_glob(&fixture("text/shard-*.parquet")).unwrap();
        assert_eq!(shards, vec![fixture("text/shard-00000.parquet"), fixture("text/shard-00001.parquet")]);
        assert_eq!(expand_glob(&fixture("text/shard-0000?.parquet")).unwrap(), shards);
        assert_eq!(expand_glob(&fixture("text/*")).unwrap(), shards);
        assert_eq!(expand_glob(&fixture("text/shard-00001.parquet")).unwrap(), shards[1..]);
        let mut text = Vec::new();
        for shard in &shards {
            let name = format!("text/{}", shard.file_name().unwrap().to_str().unwrap());
            let rows = read(&name, &["text"]).unwrap();
            assert_eq!(rows, expected(&name));
            text.extend(rows.into_iter().map(|r| r["text"].as_str().unwrap().to_string()));
        }
        assert_eq!(text, ["shard zero, row zero", "shard zero, row one", "shard one, row zero", "Ünïcödé ✓", ""]);
    }

    #[test]
    fn glob_errors_name_the_pattern() {
        for (pattern, says) in [
            ("text/train-*.parquet", "no file matches"),
            ("text/shard-?.parquet", "no file matches"),
            ("te*t/shard-*.parquet", "only in the file name"),
            ("text/**.parquet", "`**`"),
            ("nowhere/shard-*.parquet", "cannot list"),
            ("text/missing.parquet", "no such file"),
        ] {
            let err = expand_glob(&fixture(pattern)).unwrap_err();
            assert!(err.contains(pattern) && err.contains(says), "{pattern}: {err}");
        }
    }

    #[test]
    fn glob_skips_hidden_files_and_directories() {
        let dir = std::env::temp_dir().join(format!("parquet_rows_glob_{}", std::process::id()));
        std::fs::create_dir_all(dir.join("c.parquet")).unwrap();
        for name in ["b.parquet", "a.parquet", ".a.parquet", "a.parquet.tmp"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let found = expand_glob(&dir.join("*.parquet"));
        let hidden = expand_glob(&dir.join(".*.parquet"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.unwrap(), vec![dir.join("a.parquet"), dir.join("b.parquet")]);
        assert_eq!(hidden.unwrap(), vec![dir.join(".a.parquet")]);
    }

    #[test]
    fn wildcards() {
        let m = |p: &str, t: &str| wildcard_match(&p.chars().collect::<Vec<_>>(), &t.chars().collect::<Vec<_>>());
        assert!(m("train-*.parquet", "train-00000-of-00002.parquet"));
        assert!(m("*", "x") && m("*", "") && m("a*b*c", "aXbYbZc") && m("??", "日本"));
        assert!(!m("train-*.parquet", "test-0.parquet") && !m("a?c", "ac") && !m("a*b", "aXbY"));
        assert!(m("*a*a*a*b", "aaaaaaaaaaaaaaaaab") && !m("*a*a*a*b", "aaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn unknown_column_names_file_column_and_columns() {
        let err = read("chat.parquet", &["messages", "conversation"]).unwrap_err();
        assert!(err.contains("chat.parquet"), "{err}");
        assert!(err.contains("`conversation`"), "{err}");
        assert!(err.contains("messages, id"), "{err}");
    }

    #[test]
    fn hostile_files_are_clear_errors_not_panics() {
        for (name, says) in [
            ("truncated.parquet", "does not end with the magic number"),
            ("huge_footer.parquet", "footer claims 2147483647 bytes"),
            ("random.parquet", "not a Parquet file"),
            ("corrupt_pages.parquet", "row group 0"),
            ("missing.parquet", "No such file"),
        ] {
            let err = read(name, &[]).unwrap_err();
            eprintln!("{err}");
            assert!(err.contains(name) && err.contains(says), "{name}: {err}");
        }
    }

    #[test]
    fn crafted_files_never_panic() {
        // Single-byte corruptions of chat.parquet (every 5th byte of the footer and the 400 before
        // it, every 7th of the pages) and truncations: each an error naming the file or a read to
        // the end, never a panic escaping or a hang.
        let good = std::fs::read(fixture("chat.parquet")).unwrap();
        let dir = std::env::temp_dir().join(format!("parquet_rows_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("crafted.parquet");
        let footer_len = u32::from_le_bytes(good[good.len() - 8..good.len() - 4].try_into().unwrap()) as usize;
        let footer_start = good.len() - 8 - footer_len;
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for i in (footer_start.saturating_sub(400)..good.len()).step_by(5) {
            for v in [0xff, good[i] ^ 0x10] {
                let mut bad = good.clone();
                bad[i] = v;
                cases.push(bad);
            }
        }
        // Zeroed bytes in the pages: some make the crate (60.2) panic, which must come back as an error.
        for i in (4..footer_start).step_by(7) {
            let mut bad = good.clone();
            bad[i] = 0;
            cases.push(bad);
        }
        for len in (0..good.len()).step_by(97) {
            cases.push(good[..len].to_vec());
        }
        let (mut errors, mut caught, mut fine) = (0, 0, 0);
        for bad in &cases {
            std::fs::write(&path, bad).unwrap();
            match for_each_row(&path, &[], &mut |_, _| Ok(())) {
                Ok(()) => fine += 1,
                Err(e) => {
                    assert!(e.contains("crafted.parquet"), "{e}");
                    if e.contains("panicked") {
                        eprintln!("caught: {e}");
                        caught += 1;
                    } else {
                        errors += 1;
                    }
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        eprintln!("{} cases: {errors} errors, {caught} caught panics, {fine} read fine", cases.len());
        assert!(errors > 0 && fine > 0, "{errors} errors, {fine} fine");
    }

    #[test]
    fn conversions() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(-1), "1969-12-31");
        assert_eq!(date_string(19_782), "2024-02-29");
        assert_eq!(timestamp_string(-1), "1969-12-31T23:59:59.999999");
        assert_eq!(time_string(0), "00:00:00");
        assert_eq!(decimal_string(&[0xff, 0xfb], 2).unwrap(), "-0.05");
        assert_eq!(decimal_string(&[0x80, 0, 0, 0], 0).unwrap(), "-2147483648");
        assert_eq!(decimal_string(&[0x01, 0x00], 5).unwrap(), "0.00256");
        assert_eq!(decimal_string(&[], 0).unwrap(), "0");
        assert_eq!(float(f64::NAN), Value::Null);
    }
}
