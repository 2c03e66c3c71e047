//! `report_to = ["tensorboard"]`: TensorBoard event files with the scalar names HF's `TensorBoardCallback`
//! writes (`train/loss`, `train/learning_rate`, `eval/accuracy`, ...), in `output_dir/runs/<date>_<host>/`.
//!
//! The format is small enough to write by hand: a TFRecord file (each record `len: u64 LE`, `masked_crc32c(len)`,
//! `data`, `masked_crc32c(data)`) of `tensorflow.Event` protobuf messages, the first carrying `file_version =
//! "brain.Event:2"`, the others a `Summary` of `simple_value` scalars. Hand-encoding the four fields used avoids
//! a protobuf code generator and its build step.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, TrainError};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotate right by 15 and add 0xa282ead8.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Reads back the records of a TFRecord byte string, checking both CRCs of each.
pub fn read_tfrecords(mut bytes: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            return Err("truncated record header".into());
        }
        let len_bytes = &bytes[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "header")?) as usize;
        let crc = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| "header")?);
        if crc != masked_crc32c(len_bytes) {
            return Err(format!("record {}: length CRC mismatch", out.len()));
        }
        if bytes.len() < 16 + len {
            return Err(format!("record {}: truncated data", out.len()));
        }
        let data = &bytes[12..12 + len];
        let dcrc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().map_err(|_| "footer")?);
        if dcrc != masked_crc32c(data) {
            return Err(format!("record {}: data CRC mismatch", out.len()));
        }
        out.push(data.to_vec());
        bytes = &bytes[16 + len..];
    }
    Ok(out)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 (string) }`.
pub fn event_file_version(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::new();
    key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    bytes_field(&mut e, 3, b"brain.Event:2");
    e
}

/// `Event { wall_time, step, summary = 5 { value = 1 { tag = 1, simple_value = 2 (float) } ... } }`.
pub fn event_scalars(wall_time: f64, step: i64, scalars: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in scalars {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        key(&mut value, 2, 5);
        value.extend_from_slice(&v.to_le_bytes());
        bytes_field(&mut summary, 1, &value);
    }
    let mut e = Vec::new();
    key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    bytes_field(&mut e, 5, &summary);
    e
}

/// HF's `rewrite_logs`: `eval_x` → `eval/x`, `test_x` → `test/x`, anything else → `train/x`.
pub fn hf_tag(key: &str) -> String {
    for p in ["eval_", "test_"] {
        if let Some(rest) = key.strip_prefix(p) {
            return format!("{}/{rest}", &p[..p.len() - 1]);
        }
    }
    format!("train/{key}")
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// HF's default logging directory name `%b%d_%H-%M-%S_<hostname>` (UTC).
fn run_name(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}{day:02}_{:02}-{:02}-{:02}_{}",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        hostname()
    )
}

/// An open event file; each [`add_scalars`](Self::add_scalars) appends one event and flushes.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<time>.<host>.<pid>.0` (TensorBoard reads any `*tfevents*` file).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let t = now();
        let path = dir.join(format!("events.out.tfevents.{}.{}.{}.0", t as u64, hostname(), std::process::id()));
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = EventWriter { file, path };
        w.write(&event_file_version(t))?;
        Ok(w)
    }

    /// A writer in `output_dir/runs/<%b%d_%H-%M-%S>_<hostname>/`, as HF's default `logging_dir`.
    pub fn in_output_dir(output_dir: &Path) -> Result<Self> {
        Self::create(&output_dir.join("runs").join(run_name(now() as u64)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file.write_all(&tfrecord(event)).map_err(|e| TrainError::io(&self.path, e))?;
        self.file.flush().map_err(|e| TrainError::io(&self.path, e))
    }

    /// HF `TensorBoardCallback.on_log`: every numeric entry of `logs` as a scalar at `step`, named by
    /// [`hf_tag`]; `epoch`/`step` go in as `train/epoch` (HF logs the epoch too) and `step` is dropped.
    pub fn add_scalars<'a>(&mut self, step: u64, logs: impl Iterator<Item = (&'a String, f64)>) -> Result<()> {
        let scalars: Vec<(String, f32)> =
            logs.filter(|(k, _)| k.as_str() != "step").map(|(k, v)| (hf_tag(k), v as f32)).collect();
        if scalars.is_empty() {
            return Ok(());
        }
        self.write(&event_scalars(now(), step as i64, &scalars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720 appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_read_back_and_corruption_is_detected() {
        let mut file = tfrecord(&event_file_version(1.5));
        file.extend(tfrecord(&event_scalars(2.0, 7, &[("train/loss".into(), 0.25)])));
        let recs = read_tfrecords(&file).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(recs[0].ends_with(b"brain.Event:2"));
        assert!(recs[1].windows(10).any(|w| w == b"train/loss"));
        let n = file.len();
        file[n - 6] ^= 1;
        assert!(read_tfrecords(&file).unwrap_err().contains("CRC"));
    }

    #[test]
    fn hf_names_and_run_directory() {
        assert_eq!(hf_tag("eval_accuracy"), "eval/accuracy");
        assert_eq!(hf_tag("loss"), "train/loss");
        assert_eq!(hf_tag("test_f1"), "test/f1");
        assert!(run_name(1_765_000_000).starts_with("Dec06_05-46-40_"));
    }
}
