//! CSV/TSV sources (open_clip's `--csv-img-key filepath --csv-caption-key title`).
//!
//! The whole table is read when the pipeline is built (it is small next to its images) so that
//! its length is known and shuffling is a permutation. Image paths are relative to the table's
//! folder unless absolute. Rows with an empty path are dropped at load time and counted.

use std::path::{Path, PathBuf};

use super::files::{open_regular, Refusal};
use super::raw::{Payload, RawItem, RawSample, Skip};
use crate::error::{CoreError, Location, Result};

pub struct TableSource {
    table: String,
    rows: Vec<(PathBuf, Option<String>, u64)>, // image path, caption (None = not UTF-8), row
    max_image_bytes: u64,
}

impl TableSource {
    /// Reads the table at `path`: pictures from column `image_key`, captions from
    /// `caption_key`, fields split by `separator` (default: tab for `.tsv`, else comma).
    pub fn open(
        path: &Path,
        image_key: &str,
        caption_key: &str,
        separator: Option<u8>,
        max_image_bytes: u64,
    ) -> Result<TableSource> {
        let table = path.display().to_string();
        let whole = |refusal: Refusal| {
            let location = Location {
                source: table.clone(),
                member: None,
                index: None,
            };
            CoreError::data(location, refusal.reason)
        };
        // A table is read whole (no size limit), but only from a regular file.
        let (file, len) = open_regular(path, u64::MAX).map_err(whole)?;
        let io = |e: std::io::Error| CoreError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len as usize)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, e)))?;
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io)?;
        let separator = separator.unwrap_or_else(|| {
            if table.to_ascii_lowercase().ends_with(".tsv") {
                b'\t'
            } else {
                b','
            }
        });
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(separator)
            .flexible(false)
            .from_reader(bytes.as_slice());
        let at = |row: Option<u64>| Location {
            source: table.clone(),
            member: None,
            index: row,
        };
        let headers = reader
            .byte_headers()
            .map_err(|e| CoreError::data(at(None), format!("cannot read the header row: {e}")))?
            .clone();
        let column = |name: &str, argument: &str| {
            headers
                .iter()
                .position(|h| h == name.as_bytes())
                .ok_or_else(|| {
                    let have: Vec<String> = headers
                        .iter()
                        .map(|h| String::from_utf8_lossy(h).into_owned())
                        .collect();
                    CoreError::invalid(
                        argument,
                        format!("column {name:?} not in {table} (columns: {have:?})"),
                    )
                })
        };
        let image_col = column(image_key, "csv_image_key")?;
        let caption_col = column(caption_key, "csv_caption_key")?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut rows = Vec::new();
        for (i, record) in reader.byte_records().enumerate() {
            let row = i as u64 + 1;
            let record = record
                .map_err(|e| CoreError::data(at(Some(row)), format!("malformed row: {e}")))?;
            let image = String::from_utf8_lossy(record.get(image_col).unwrap_or_default())
                .trim()
                .to_string();
            let caption = std::str::from_utf8(record.get(caption_col).unwrap_or_default())
                .ok()
                .map(str::to_string);
            let image = if image.is_empty() {
                PathBuf::new()
            } else {
                base.join(image)
            };
            rows.push((image, caption, row));
        }
        if rows.is_empty() {
            return Err(CoreError::data(
                at(None),
                "table has no rows (empty source)",
            ));
        }
        Ok(TableSource {
            table,
            rows,
            max_image_bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_bytes
    }

    pub fn sample(&self, i: usize) -> RawItem {
        let (image, caption, row) = &self.rows[i];
        let location = Location {
            source: self.table.clone(),
            member: Some(image.display().to_string()),
            index: Some(*row),
        };
        if image.as_os_str().is_empty() {
            return Err(Skip::new(
                "missing_image",
                location,
                format!("row {row} has an empty image path"),
            ));
        }
        let Some(caption) = caption else {
            return Err(Skip::new(
                "invalid_caption",
                location,
                format!("row {row}: caption is not valid UTF-8"),
            ));
        };
        Ok(RawSample {
            key: format!("row{row}"),
            location,
            payload: Payload::File(image.clone()),
            captions: vec![caption.clone()],
            label: None,
        })
    }
}
