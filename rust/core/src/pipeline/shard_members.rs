//! What the members of one webdataset sample mean: the picture, the captions (`.json`'s
//! `captions` list or `caption` string, else `.txt`; an empty list or string counts as none,
//! so it cannot hide a good `.txt`) and the class label (a `.cls` member, the
//! class index as text, or the `.json`'s `label`), with the class names and dataset type from
//! the files CLIP_benchmark keeps beside its shards (`shard_layout`). In a retrieval dataset
//! (`dataset_type.txt` says so) each line of a `.txt` is one caption, as CLIP_benchmark
//! writes them; elsewhere a `.txt` is one caption, as open_clip's training reads it. A
//! labelled sample without a caption gets "a photo of a <class>." (as image folders do), or
//! "" when no names are known.

use super::raw::{Payload, RawItem, RawSample, Skip};
use super::shard_layout::{split_lines, ShardLayout};
use crate::error::Location;

/// The members of one sample seen so far.
#[derive(Default)]
pub struct Group {
    pub key: String,
    pub image: Option<(String, Vec<u8>)>,
    pub json: Option<(String, Vec<u8>)>,
    pub txt: Option<(String, Vec<u8>)>,
    pub cls: Option<(String, Vec<u8>)>,
}

/// The captions of a `.txt` member: one per line in a retrieval dataset, else the whole text.
/// A blank line in a retrieval `.txt` is refused: CLIP_benchmark counts it as a caption "",
/// which has nothing to tokenize here.
fn txt_captions(text: String, retrieval: bool) -> std::result::Result<Vec<String>, String> {
    if !retrieval {
        return Ok(vec![text]);
    }
    let captions: Vec<String> = split_lines(&text).map(str::to_string).collect();
    if let Some(i) = captions.iter().position(|c| c.trim().is_empty()) {
        return Err(format!(
            "line {} of {} is blank; in a retrieval dataset (dataset_type.txt) every line is \
             a caption, and CLIP_benchmark would count this one as \"\"",
            i + 1,
            captions.len()
        ));
    }
    Ok(captions)
}

pub fn finish_group(shard: &str, group: Group, layout: &ShardLayout) -> RawItem {
    let class_names = layout.class_names.as_deref();
    let loc = |member: Option<String>| Location {
        source: shard.to_string(),
        member,
        index: None,
    };
    let Some((image_member, image)) = group.image else {
        return Err(Skip::new(
            "missing_image",
            loc(Some(group.key.clone())),
            format!("sample {} has no .jpg/.jpeg/.png/.webp member", group.key),
        ));
    };
    let json = match &group.json {
        Some((member, bytes)) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => Some((member, value)),
            Err(e) => {
                return Err(Skip::new(
                    "invalid_caption",
                    loc(Some(member.clone())),
                    format!("caption JSON does not parse: {e}"),
                ))
            }
        },
        None => None,
    };
    let label = match sample_label(&group.cls, json.as_ref().map(|(m, v)| (*m, v)), class_names) {
        Ok(label) => label,
        Err((member, reason)) => return Err(Skip::new("invalid_label", loc(Some(member)), reason)),
    };
    // The `.json`'s captions when it has any, else the `.txt`; an empty `captions` list (or
    // `caption` string) counts as none, so it does not hide a good `.txt`.
    let json_captions = match &json {
        Some((member, value)) => match json_captions(value) {
            Ok(captions) => Some(captions),
            Err(reason) => {
                return Err(Skip::new(
                    "invalid_caption",
                    loc(Some((*member).clone())),
                    reason,
                ))
            }
        },
        None => None,
    };
    let captions = match (json_captions, group.txt) {
        (Some(captions), _) if !captions.is_empty() => captions,
        (_, Some((member, bytes))) => {
            let captions = String::from_utf8(bytes)
                .map_err(|_| "caption is not valid UTF-8".to_string())
                .and_then(|text| txt_captions(text, layout.is_retrieval()));
            match captions {
                Ok(captions) => captions,
                Err(reason) => return Err(Skip::new("invalid_caption", loc(Some(member)), reason)),
            }
        }
        (json_captions, None) => match (label, json_captions, &json) {
            // Classification shards carry no caption: name the class, as image folders do.
            (Some(index), _, _) => vec![class_names
                .and_then(|names| names.get(index as usize))
                .map(|name| format!("a photo of a {name}."))
                .unwrap_or_default()],
            // Present but empty: skipped later as `empty_caption`.
            (None, Some(captions), Some((_, value))) if has_captions(value) => captions,
            (None, _, Some((member, _))) => {
                return Err(Skip::new(
                    "invalid_caption",
                    loc(Some((*member).clone())),
                    "caption JSON has neither a `captions` list nor a `caption` string",
                ))
            }
            (None, _, None) => {
                return Err(Skip::new(
                    "missing_caption",
                    loc(Some(image_member)),
                    format!("sample {} has no .txt or .json caption", group.key),
                ))
            }
        },
    };
    Ok(RawSample {
        key: group.key,
        location: loc(Some(image_member)),
        payload: Payload::Encoded(image),
        captions,
        label,
    })
}

/// The class index of a sample: its `.cls` member, else its JSON's `label`; checked against
/// the class names when they are known. Err carries the member to blame and why.
fn sample_label(
    cls: &Option<(String, Vec<u8>)>,
    json: Option<(&String, &serde_json::Value)>,
    class_names: Option<&[String]>,
) -> std::result::Result<Option<i64>, (String, String)> {
    let (member, label) = if let Some((member, bytes)) = cls {
        let text = String::from_utf8_lossy(bytes);
        match text.trim().parse::<i64>() {
            Ok(v) => (member.clone(), v),
            Err(_) => {
                let shown: String = text.trim().chars().take(40).collect();
                return Err((
                    member.clone(),
                    format!("class label {shown:?} is not an integer"),
                ));
            }
        }
    } else if let Some((member, value)) = json {
        match value.get("label") {
            None => return Ok(None),
            Some(v) => match v.as_i64() {
                Some(v) => (member.clone(), v),
                None => {
                    return Err((
                        member.clone(),
                        format!("JSON `label` {v} is not an integer"),
                    ))
                }
            },
        }
    } else {
        return Ok(None);
    };
    let limit = class_names.map_or(i64::MAX, |n| n.len() as i64);
    if label < 0 || label >= limit {
        let names = class_names.map_or(String::new(), |n| {
            format!(" (classnames.txt lists {} classes)", n.len())
        });
        return Err((
            member,
            format!("class label {label} is out of range{names}"),
        ));
    }
    Ok(Some(label))
}

fn has_captions(value: &serde_json::Value) -> bool {
    value.get("captions").is_some() || value.get("caption").is_some()
}

/// The captions of a webdataset `.json`: its `captions` list, else its `caption` string;
/// empty when it has neither (or they are empty). Err for a list with a non-string entry.
fn json_captions(value: &serde_json::Value) -> std::result::Result<Vec<String>, String> {
    if let Some(list) = value.get("captions").and_then(|v| v.as_array()) {
        let captions: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if captions.len() != list.len() {
            return Err("caption JSON has a non-string entry in `captions`".into());
        }
        if !captions.is_empty() {
            return Ok(captions);
        }
    }
    Ok(value
        .get("caption")
        .and_then(|v| v.as_str())
        .filter(|c| !c.is_empty())
        .map(|c| vec![c.to_string()])
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::shard_layout::DatasetType;

    #[test]
    fn json_captions_accepts_lists_and_strings() {
        let parse = |text: &str| json_captions(&serde_json::from_str(text).unwrap());
        assert_eq!(
            parse(r#"{"captions": ["a", "b"]}"#).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(parse(r#"{"caption": "c"}"#).unwrap(), vec!["c"]);
        assert!(parse(r#"{"captions": [1]}"#).is_err());
        assert!(parse(r#"{"label": 3}"#).unwrap().is_empty());
        assert_eq!(
            parse(r#"{"captions": [], "caption": "c"}"#).unwrap(),
            vec!["c"]
        );
    }

    #[test]
    fn an_empty_json_caption_list_falls_back_to_the_txt() {
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"captions": []}"#), Some("from txt")),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(sample.captions, vec!["from txt"]);
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"caption": ""}"#), Some("from txt")),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(sample.captions, vec!["from txt"]);
        // A non-empty JSON list still wins over the .txt.
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"captions": ["a", "b"]}"#), Some("t")),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(sample.captions, vec!["a", "b"]);
        // Without a .txt an empty list stays empty (skipped later as empty_caption), and a
        // JSON without captions is named.
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"captions": []}"#), None),
            &ShardLayout::default(),
        )
        .unwrap();
        assert!(sample.captions.is_empty());
        let skip = finish_group(
            "s.tar",
            group(None, Some(r#"{"url": "x"}"#), None),
            &ShardLayout::default(),
        )
        .unwrap_err();
        assert_eq!(skip.kind, "invalid_caption");
        assert!(skip.reason.contains("neither"), "{}", skip.reason);
    }

    fn labelled(names: &[String]) -> ShardLayout {
        ShardLayout {
            class_names: Some(names.to_vec()),
            ..ShardLayout::default()
        }
    }

    fn retrieval() -> ShardLayout {
        ShardLayout {
            dataset_type: Some(DatasetType::Retrieval),
            ..ShardLayout::default()
        }
    }

    #[test]
    fn a_retrieval_txt_holds_one_caption_per_line_as_clip_benchmark_writes_it() {
        let text = "a dog runs.\nA brown dog.\r\nthe dog\n";
        let sample = finish_group("s.tar", group(None, None, Some(text)), &retrieval()).unwrap();
        assert_eq!(
            sample.captions,
            vec!["a dog runs.", "A brown dog.", "the dog"]
        );
        // Outside a retrieval dataset a .txt is one caption (open_clip's training reading).
        let sample = finish_group(
            "s.tar",
            group(None, None, Some(text)),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(sample.captions, vec![text]);
        let skip =
            finish_group("s.tar", group(None, None, Some("a\n\nb")), &retrieval()).unwrap_err();
        assert_eq!(skip.kind, "invalid_caption");
        assert!(
            skip.reason.contains("line 2 of 3 is blank"),
            "{}",
            skip.reason
        );
        assert_eq!(skip.location.member.as_deref(), Some("k.txt"));
    }

    fn group(cls: Option<&str>, json: Option<&str>, txt: Option<&str>) -> Group {
        let member = |ext: &str, text: &str| (format!("k.{ext}"), text.as_bytes().to_vec());
        Group {
            key: "k".into(),
            image: Some(("k.jpg".into(), vec![1, 2, 3])),
            json: json.map(|t| member("json", t)),
            txt: txt.map(|t| member("txt", t)),
            cls: cls.map(|t| member("cls", t)),
        }
    }

    #[test]
    fn labels_come_from_cls_or_json_and_name_the_class_when_there_is_no_caption() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        let sample =
            finish_group("s.tar", group(Some(" 1\n"), None, None), &labelled(&names)).unwrap();
        assert_eq!(sample.label, Some(1));
        assert_eq!(sample.captions, vec!["a photo of a dog."]);
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"label": 0}"#), Some("x")),
            &labelled(&names),
        )
        .unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (Some(0), vec!["x".to_string()])
        );
        // No names known: the label stands alone and the caption is empty.
        let sample = finish_group(
            "s.tar",
            group(Some("7"), None, None),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (Some(7), vec![String::new()])
        );
        // A captioned, unlabelled sample is unchanged.
        let sample = finish_group(
            "s.tar",
            group(None, None, Some("a cap")),
            &ShardLayout::default(),
        )
        .unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (None, vec!["a cap".to_string()])
        );
    }

    #[test]
    fn bad_labels_are_skipped_with_the_member_named() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        for (g, needle) in [
            (group(Some("two"), None, None), "\"two\" is not an integer"),
            (
                group(Some("2"), None, None),
                "2 is out of range (classnames.txt lists 2",
            ),
            (group(Some("-1"), None, None), "-1 is out of range"),
            (
                group(None, Some(r#"{"label": "x"}"#), None),
                "`label` \"x\" is not an integer",
            ),
        ] {
            let skip = finish_group("s.tar", g, &labelled(&names)).unwrap_err();
            assert_eq!(skip.kind, "invalid_label");
            assert!(skip.reason.contains(needle), "{}", skip.reason);
            assert!(skip.location.member.as_deref().unwrap().starts_with("k."));
        }
        let skip =
            finish_group("s.tar", group(None, None, None), &ShardLayout::default()).unwrap_err();
        assert_eq!(skip.kind, "missing_caption");
    }
}
