//! The files CLIP_benchmark keeps beside its webdataset shards, read as CLIP_benchmark reads
//! them: `dataset_type.txt` (retrieval or classification), `classnames.txt` (one class per
//! line, label order) and `zeroshot_classification_templates.txt` (one prompt per line, with a
//! `{c}` slot). CLIP_benchmark writes them into the dataset root and the shards into
//! `root/<split>/`, so each file is looked for beside the first shard, then in its parent.
//!
//! CLIP_benchmark splits these files (and a retrieval sample's `.txt`) with Python's
//! `str.splitlines`; [`split_lines`] splits at the same characters, so every line means the
//! same thing here. What it would read differently from what was meant is refused with the file
//! named: a dataset type it does not know (it would quietly treat a typo as classification) and
//! a blank line in a list (it would read a class or prompt named "").

use std::path::{Path, PathBuf};

use crate::error::{CoreError, Location, Result};

pub const CLASS_NAMES_FILE: &str = "classnames.txt";
pub const DATASET_TYPE_FILE: &str = "dataset_type.txt";
pub const TEMPLATES_FILE: &str = "zeroshot_classification_templates.txt";

/// What a `dataset_type.txt` says; CLIP_benchmark assumes classification without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetType {
    /// Each sample has a `.cls` class index.
    Classification,
    /// Each sample's `.txt` holds its captions, one per line.
    Retrieval,
    /// Each sample's `.npy` holds a multi-hot label vector.
    Multilabel,
}

impl DatasetType {
    pub fn name(self) -> &'static str {
        match self {
            DatasetType::Classification => "classification",
            DatasetType::Retrieval => "retrieval",
            DatasetType::Multilabel => "multilabel",
        }
    }
}

/// The layout files found with a set of shards (each None when absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardLayout {
    pub dataset_type: Option<DatasetType>,
    pub class_names: Option<Vec<String>>,
    pub templates: Option<Vec<String>>,
}

impl ShardLayout {
    /// Reads the layout files that lie beside the first existing shard or in its parent.
    pub fn find(shards: &[String]) -> Result<ShardLayout> {
        let Some(first) = shards.iter().map(Path::new).find(|p| p.exists()) else {
            return Ok(ShardLayout::default());
        };
        let folder = first.parent().unwrap_or(Path::new("")).to_path_buf();
        let dataset_type = match read_layout_file(&folder, DATASET_TYPE_FILE)? {
            Some((path, text)) => Some(parse_dataset_type(&path, &text)?),
            None => None,
        };
        let list = |name| -> Result<Option<Vec<String>>> {
            match read_layout_file(&folder, name)? {
                Some((path, text)) => parse_list(&path, &text).map(Some),
                None => Ok(None),
            }
        };
        Ok(ShardLayout {
            dataset_type,
            class_names: list(CLASS_NAMES_FILE)?,
            templates: list(TEMPLATES_FILE)?,
        })
    }

    pub fn is_retrieval(&self) -> bool {
        self.dataset_type == Some(DatasetType::Retrieval)
    }
}

/// `name` beside the shards, else in their parent folder: its path and text.
fn read_layout_file(folder: &Path, name: &str) -> Result<Option<(PathBuf, String)>> {
    let candidates =
        std::iter::once(folder.join(name)).chain(folder.parent().map(|p| p.join(name)));
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| CoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            layout_error(
                &path,
                "is not valid UTF-8 (CLIP_benchmark reads it as UTF-8)",
            )
        })?;
        return Ok(Some((path, text)));
    }
    Ok(None)
}

fn layout_error(path: &Path, reason: impl Into<String>) -> CoreError {
    CoreError::data(
        Location {
            source: path.display().to_string(),
            member: None,
            index: None,
        },
        reason,
    )
}

/// CLIP_benchmark's reading (`strip().lower()`), limited to the types it knows.
fn parse_dataset_type(path: &Path, text: &str) -> Result<DatasetType> {
    match text.trim().to_lowercase().as_str() {
        "retrieval" => Ok(DatasetType::Retrieval),
        "classification" => Ok(DatasetType::Classification),
        "multilabel" => Ok(DatasetType::Multilabel),
        other => {
            let shown: String = other.chars().take(40).collect();
            Err(layout_error(
                path,
                format!(
                    "dataset type {shown:?} is not one of retrieval, classification, multilabel \
                     (CLIP_benchmark would read it as classification)"
                ),
            ))
        }
    }
}

/// One entry per line, stripped, as CLIP_benchmark reads `classnames.txt` and the templates.
fn parse_list(path: &Path, text: &str) -> Result<Vec<String>> {
    let entries: Vec<String> = split_lines(text).map(|l| l.trim().to_string()).collect();
    if entries.is_empty() {
        return Err(layout_error(path, "lists nothing (the file is empty)"));
    }
    if let Some(i) = entries.iter().position(String::is_empty) {
        return Err(layout_error(
            path,
            format!(
                "line {} is blank; CLIP_benchmark would read it as an entry named \"\" \
                 (remove the line)",
                i + 1
            ),
        ));
    }
    Ok(entries)
}

/// Python's line boundaries for `str`: `\n`, `\r`, `\r\n`, and the rarer separators below.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// The lines of `text` exactly as Python's `text.splitlines()` gives them: split at every
/// line boundary (`\r\n` counts as one), no empty line after a final boundary.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(at) = rest.find(is_line_break) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        let width = if rest[at..].starts_with("\r\n") {
            2
        } else {
            rest[at..].chars().next().map_or(1, char::len_utf8)
        };
        rest = &rest[at + width..];
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        split_lines(text).collect()
    }

    #[test]
    fn split_lines_matches_python_splitlines() {
        // Expected values are Python's "...".splitlines().
        assert_eq!(lines(""), Vec::<&str>::new());
        assert_eq!(lines("a"), vec!["a"]);
        assert_eq!(lines("a\n"), vec!["a"]);
        assert_eq!(lines("a\n\n"), vec!["a", ""]);
        assert_eq!(lines("\n"), vec![""]);
        assert_eq!(lines("a\r\nb\rc\nd"), vec!["a", "b", "c", "d"]);
        assert_eq!(lines("a\r\r\nb"), vec!["a", "", "b"]);
        assert_eq!(lines("x\u{2028}y\u{85}z\x0bw"), vec!["x", "y", "z", "w"]);
        assert_eq!(lines("é\u{2029}"), vec!["é"]);
    }

    /// `root/test/0.tar` with `files` written into `root` (CLIP_benchmark's layout).
    fn layout_in(files: &[(&str, &str)]) -> Result<ShardLayout> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("lightclip-layout-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("test")).unwrap();
        let shard = root.join("test/0.tar");
        std::fs::write(&shard, b"").unwrap();
        for (name, text) in files {
            std::fs::write(root.join(name), text).unwrap();
        }
        let layout = ShardLayout::find(&[shard.display().to_string()]);
        std::fs::remove_dir_all(&root).unwrap();
        layout
    }

    #[test]
    fn reads_clip_benchmark_files_from_the_parent_of_the_split_folder() {
        let layout = layout_in(&[
            ("dataset_type.txt", " Retrieval\n"),
            ("classnames.txt", "cat\n  sea lion \n"),
            (TEMPLATES_FILE, "a photo of a {c}.\r\na {c}."),
        ]);
        let layout = layout.unwrap();
        assert_eq!(layout.dataset_type, Some(DatasetType::Retrieval));
        assert_eq!(layout.class_names.unwrap(), vec!["cat", "sea lion"]);
        assert_eq!(
            layout.templates.unwrap(),
            vec!["a photo of a {c}.", "a {c}."]
        );
        let layout = layout_in(&[]);
        assert_eq!(layout.unwrap(), ShardLayout::default());
    }

    #[test]
    fn what_clip_benchmark_would_misread_is_refused_naming_the_file() {
        for (files, needle) in [
            (
                vec![("dataset_type.txt", "retreival\n")],
                "\"retreival\" is not one of",
            ),
            (vec![("dataset_type.txt", "")], "\"\" is not one of"),
            (vec![("classnames.txt", "cat\n\ndog\n")], "line 2 is blank"),
            (vec![("classnames.txt", "cat\ndog\n\n")], "line 3 is blank"),
            (vec![("classnames.txt", "")], "lists nothing"),
            (vec![(TEMPLATES_FILE, "a {c}.\n \n")], "line 2 is blank"),
            (vec![("classnames.txt", "caf\u{e9}")], "ok"),
        ] {
            let layout = layout_in(&files);
            if needle == "ok" {
                assert!(layout.is_ok());
                continue;
            }
            let message = layout.unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
            assert!(message.contains(files[0].0), "{message}");
        }
    }
}
