//! The data files the service reads by: JSON Schemas, FHIR ValueSets and CodeSystems, the
//! policy definition (all under `fhir-profiles/`) and the card templates (under `cards/`).
//!
//! Both folders are embedded in the binary at compile time, so `cargo run --release` works from
//! any directory with no files beside it. A deployment (or a policy editor trying a change) can
//! point `profiles_dir` / `cards_dir` at folders on disk: a file found there wins over the
//! embedded copy of the same relative path. Everything is read once at start-up, never per
//! request.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

static EMBEDDED_PROFILES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fhir-profiles");
static EMBEDDED_CARDS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/cards");

/// Which of the two asset folders a path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// `fhir-profiles/`: schemas, value sets, code systems, policy data.
    Profiles,
    /// `cards/`: card text templates.
    Cards,
}

impl Folder {
    fn name(self) -> &'static str {
        match self {
            Folder::Profiles => "fhir-profiles",
            Folder::Cards => "cards",
        }
    }
}

/// Failure to find or read an asset; names the file so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("asset {folder}/{path} not found (neither on disk nor embedded)")]
    NotFound { folder: &'static str, path: String },
    #[error("asset {path} could not be read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded asset {folder}/{path} is not UTF-8")]
    NotUtf8 { folder: &'static str, path: String },
    #[error("asset {folder}/{path} is not valid JSON: {message}")]
    Json {
        folder: &'static str,
        path: String,
        message: String,
    },
}

/// Read access to the asset folders, disk overrides first.
#[derive(Debug, Clone, Default)]
pub struct Assets {
    profiles_dir: Option<PathBuf>,
    cards_dir: Option<PathBuf>,
}

impl Assets {
    /// Embedded assets only.
    pub fn embedded() -> Self {
        Self::default()
    }

    /// Embedded assets, overridden file by file from the given folders.
    pub fn with_overrides(profiles_dir: Option<PathBuf>, cards_dir: Option<PathBuf>) -> Self {
        Self {
            profiles_dir,
            cards_dir,
        }
    }

    fn override_dir(&self, folder: Folder) -> Option<&Path> {
        match folder {
            Folder::Profiles => self.profiles_dir.as_deref(),
            Folder::Cards => self.cards_dir.as_deref(),
        }
    }

    fn embedded_dir(folder: Folder) -> &'static Dir<'static> {
        match folder {
            Folder::Profiles => &EMBEDDED_PROFILES,
            Folder::Cards => &EMBEDDED_CARDS,
        }
    }

    /// The text of `path` (relative to `folder`).
    pub fn read(&self, folder: Folder, path: &str) -> Result<Cow<'static, str>, AssetError> {
        if let Some(dir) = self.override_dir(folder) {
            let full = dir.join(path);
            if full.is_file() {
                return std::fs::read_to_string(&full)
                    .map(Cow::Owned)
                    .map_err(|source| AssetError::Io { path: full, source });
            }
        }
        let file =
            Self::embedded_dir(folder)
                .get_file(path)
                .ok_or_else(|| AssetError::NotFound {
                    folder: folder.name(),
                    path: path.to_owned(),
                })?;
        file.contents_utf8()
            .map(Cow::Borrowed)
            .ok_or_else(|| AssetError::NotUtf8 {
                folder: folder.name(),
                path: path.to_owned(),
            })
    }

    /// `path` parsed as JSON.
    pub fn read_json(&self, folder: Folder, path: &str) -> Result<serde_json::Value, AssetError> {
        let text = self.read(folder, path)?;
        serde_json::from_str(&text).map_err(|e| AssetError::Json {
            folder: folder.name(),
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Relative paths of the files directly inside `subdir` of `folder` whose names end with
    /// `suffix`, from the embedded copy and the override folder together, sorted and deduplicated.
    pub fn list(&self, folder: Folder, subdir: &str, suffix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let root = Self::embedded_dir(folder);
        let embedded = if subdir.is_empty() {
            Some(root)
        } else {
            root.get_dir(subdir)
        };
        if let Some(dir) = embedded {
            for f in dir.files() {
                let p = f.path().to_string_lossy().replace('\\', "/");
                if p.ends_with(suffix) {
                    out.push(p);
                }
            }
        }
        if let Some(base) = self.override_dir(folder)
            && let Ok(entries) = std::fs::read_dir(base.join(subdir))
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(suffix) && e.path().is_file() {
                    out.push(if subdir.is_empty() {
                        name
                    } else {
                        format!("{subdir}/{name}")
                    });
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_is_readable() {
        let a = Assets::embedded();
        let v = a
            .read_json(Folder::Profiles, "schemas/hook-request.schema.json")
            .unwrap();
        assert!(v.get("$schema").is_some());
    }

    #[test]
    fn listing_works_at_the_root_and_in_subfolders() {
        let a = Assets::embedded();
        let root = a.list(Folder::Profiles, "", ".json");
        assert!(root.contains(&"cds-services.json".to_owned()), "{root:?}");
        let schemas = a.list(Folder::Profiles, "schemas", ".json");
        assert!(
            schemas.contains(&"schemas/feedback.schema.json".to_owned()),
            "{schemas:?}"
        );
    }

    #[test]
    fn missing_asset_names_the_file() {
        let err = Assets::embedded()
            .read(Folder::Cards, "no/such.md")
            .unwrap_err();
        assert!(err.to_string().contains("cards/no/such.md"));
    }

    #[test]
    fn override_dir_wins() {
        let dir = std::env::temp_dir().join(format!("iort-assets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::write(dir.join("schemas/hook-request.schema.json"), "{\"x\":1}").unwrap();
        let a = Assets::with_overrides(Some(dir.clone()), None);
        let v = a
            .read_json(Folder::Profiles, "schemas/hook-request.schema.json")
            .unwrap();
        assert_eq!(v["x"], 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
