//! Hub ids resolved in the local Hugging Face cache, offline: a model named `org/name` (or a legacy
//! bare name such as `bert-base-uncased`) and a revision (a branch, a tag, `refs/pr/N` or a 40-hex
//! commit) found as the snapshot directory huggingface_hub wrote
//! (`<cache>/models--org--name/{refs,snapshots,blobs}`); that directory is then an ordinary model
//! directory for the rest of bertlab.
//!
//! Owns: where the cache is (`HF_HUB_CACHE`, `HF_HOME`, `HOME`), the shape of hub ids, and the
//! problems, each with the `hf download` command that fixes it, when a model, a revision or a
//! snapshot's file is missing. Never does: network. Nothing is downloaded or written: the cache
//! is only read.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The revision meant when none is given.
pub const DEFAULT_REVISION: &str = "main";
/// The longest part (org or name) of a hub id.
pub const MAX_ID_PART: usize = 96;
/// [`CacheRoot::source`] when no variable named the cache.
pub const DEFAULT_SOURCE: &str = "the default ~/.cache/huggingface/hub";

/// A model as named on the hub: its id and the revision wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubModel {
    pub id: String,
    pub revision: String,
}

/// A hub model found in the cache: `directory` is `<cache>/models--…/snapshots/<commit>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedHubModel {
    pub id: String,
    pub revision: String,
    pub commit: String,
    pub directory: PathBuf,
}

/// Why a hub model could not be resolved, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubCacheProblem {
    pub message: String,
    pub help: String,
}

/// The cache root and what chose it: the variable's name, or [`DEFAULT_SOURCE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRoot {
    pub path: PathBuf,
    pub source: &'static str,
}

fn non_empty(value: Option<&OsStr>) -> Option<&OsStr> {
    value.filter(|value| !value.is_empty())
}

/// `~` and `~/…` expanded with `home`, as huggingface_hub's `expanduser` does.
fn expand_home(value: &OsStr, home: Option<&OsStr>) -> PathBuf {
    if let (Some(text), Some(home)) = (value.to_str(), non_empty(home)) {
        if text == "~" {
            return PathBuf::from(home);
        }
        if let Some(rest) = text.strip_prefix("~/") {
            return Path::new(home).join(rest);
        }
    }
    PathBuf::from(value)
}

/// The environment variables that place the cache, as huggingface_hub reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheVariables {
    pub hf_hub_cache: Option<OsString>,
    /// The older name of `HF_HUB_CACHE`, still honoured by huggingface_hub.
    pub huggingface_hub_cache: Option<OsString>,
    pub hf_home: Option<OsString>,
    pub xdg_cache_home: Option<OsString>,
    pub home: Option<OsString>,
}

impl CacheVariables {
    /// The variables of this process.
    pub fn from_environment() -> CacheVariables {
        let variable = |name: &str| std::env::var_os(name);
        CacheVariables {
            hf_hub_cache: variable("HF_HUB_CACHE"),
            huggingface_hub_cache: variable("HUGGINGFACE_HUB_CACHE"),
            hf_home: variable("HF_HOME"),
            xdg_cache_home: variable("XDG_CACHE_HOME"),
            home: variable("HOME"),
        }
    }
}

/// The cache root as huggingface_hub finds it (a function of the variables, so tests need not
/// touch the process environment): `HF_HUB_CACHE` (else the older `HUGGINGFACE_HUB_CACHE`), else
/// `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `HOME/.cache/huggingface/hub`;
/// empty values count as unset, a leading `~` is the home folder.
pub fn cache_root(variables: &CacheVariables) -> Option<CacheRoot> {
    let home = variables.home.as_deref();
    let (path, source) = if let Some(value) = non_empty(variables.hf_hub_cache.as_deref()) {
        (expand_home(value, home), "HF_HUB_CACHE")
    } else if let Some(value) = non_empty(variables.huggingface_hub_cache.as_deref()) {
        (expand_home(value, home), "HUGGINGFACE_HUB_CACHE")
    } else if let Some(value) = non_empty(variables.hf_home.as_deref()) {
        (expand_home(value, home).join("hub"), "HF_HOME")
    } else if let Some(value) = non_empty(variables.xdg_cache_home.as_deref()) {
        (
            expand_home(value, home).join("huggingface/hub"),
            "XDG_CACHE_HOME",
        )
    } else {
        (
            Path::new(non_empty(home)?).join(".cache/huggingface/hub"),
            DEFAULT_SOURCE,
        )
    };
    Some(CacheRoot { path, source })
}

/// [`resolve`] in the cache the process environment names.
pub fn resolve_from_environment(model: &HubModel) -> Result<ResolvedHubModel, HubCacheProblem> {
    match cache_root(&CacheVariables::from_environment()) {
        Some(root) => resolve(&root, model),
        None => Err(no_cache_root_problem(model)),
    }
}

/// The problem when no variable names a cache root.
pub fn no_cache_root_problem(model: &HubModel) -> HubCacheProblem {
    let message = "cannot find the Hugging Face cache: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME, XDG_CACHE_HOME and HOME are all unset or empty";
    problem(model, message.to_string(), "Set one of them. ")
}

fn part_problem(id: &str, part: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let why = if part.is_empty() {
        "has an empty part".to_string()
    } else if part.len() > MAX_ID_PART {
        format!("has a part longer than {MAX_ID_PART} characters")
    } else if let Some(c) = part.chars().find(|&c| !allowed(c)) {
        format!(
            "has the character {c:?} (only letters, digits, \".\", \"_\" and \"-\" are allowed)"
        )
    } else if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        format!("has a part {part:?} that starts or ends with \"-\" or \".\"")
    } else if part.contains("--") || part.contains("..") {
        format!("has a part {part:?} that contains \"--\" or \"..\"")
    } else {
        return None;
    };
    Some(format!("hub id {id:?} {why}"))
}

/// Checks an id's shape: one or two non-empty parts of `[A-Za-z0-9._-]` separated by one "/",
/// not starting or ending with "-" or ".", without "--" or "..", at most 96 characters a part (as
/// the hub's rules); returns a message when bad.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("hub id is empty".to_string());
    }
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 {
        return Some(format!(
            "hub id {id:?} has more than one \"/\" (expected org/name or name)"
        ));
    }
    parts.iter().find_map(|part| part_problem(id, part))
}

/// Whether `revision` is a full commit hash: 40 lowercase hex digits.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A revision that cannot name a file under `refs/` (and so could escape it).
fn revision_problem(revision: &str) -> Option<String> {
    let bad = |part: &str| part.is_empty() || part == "." || part == ".." || part.contains('\\');
    if revision.is_empty() {
        Some("revision is empty".to_string())
    } else if revision.split('/').any(bad) {
        Some(format!(
            "revision {revision:?} is not a branch, tag or commit name"
        ))
    } else {
        None
    }
}

/// The cache folder of a model: `models--` and the id with every "/" replaced by "--".
pub fn folder_name(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The command that downloads `model` on a machine with network.
pub fn download_command(model: &HubModel) -> String {
    match model.revision.as_str() {
        DEFAULT_REVISION => format!("hf download {}", model.id),
        revision => format!("hf download {} --revision {revision}", model.id),
    }
}

fn problem(model: &HubModel, message: String, lead: &str) -> HubCacheProblem {
    let help = format!(
        "{lead}On a machine with network, run `{}`, then copy that machine's Hugging Face cache \
         folder (`~/.cache/huggingface/hub`) here and set HF_HUB_CACHE to it (or HF_HOME to the \
         folder above it); bertlab reads the cache offline and never downloads.",
        download_command(model)
    );
    HubCacheProblem { message, help }
}

/// The names of the directories in `path`, sorted; none when it cannot be read.
fn directory_names(path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The cached models whose name (the part after the org) is the name of `id`.
fn suggestions(root: &Path, id: &str) -> Vec<String> {
    let name = id.rsplit('/').next().unwrap_or(id);
    let folders = directory_names(root);
    let ids = folders
        .iter()
        .filter_map(|folder| folder.strip_prefix("models--"));
    ids.map(|rest| rest.replace("--", "/"))
        .filter(|other| other != id && other.rsplit('/').next() == Some(name))
        .collect()
}

/// The files under `refs`, as paths relative to it with "/" between parts, sorted.
fn list_refs(refs: &Path) -> Vec<String> {
    let (mut found, mut pending) = (Vec::new(), vec![(refs.to_path_buf(), String::new())]);
    while let Some((directory, prefix)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.path().is_dir() {
                pending.push((entry.path(), relative));
            } else {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

fn listing(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The top-level entries of `directory` that are symlinks to nothing, as "name (-> target)", sorted.
fn broken_links(directory: &Path) -> io::Result<Vec<String>> {
    let mut broken = Vec::new();
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() && fs::metadata(entry.path()).is_err() {
            let target = fs::read_link(entry.path()).unwrap_or_default();
            let name = entry.file_name().to_string_lossy().into_owned();
            broken.push(format!("{name} (-> {})", target.display()));
        }
    }
    broken.sort();
    Ok(broken)
}

/// Resolves `model` in the cache at `root`: its folder, the commit its revision names (through
/// `refs/<revision>` unless the revision is a commit hash) and that commit's snapshot, which must
/// hold `config.json` and no broken links among its top-level files.
pub fn resolve(root: &CacheRoot, model: &HubModel) -> Result<ResolvedHubModel, HubCacheProblem> {
    let (id, revision) = (model.id.as_str(), model.revision.as_str());
    let fail = |message: String, lead: &str| -> Result<ResolvedHubModel, HubCacheProblem> {
        Err(problem(model, message, lead))
    };
    let refuse = |message: String, help: &str| -> Result<ResolvedHubModel, HubCacheProblem> {
        Err(HubCacheProblem {
            message,
            help: help.to_string(),
        })
    };
    if let Some(message) = id_problem(id) {
        let help = "A hub id is `org/name` as on huggingface.co (e.g. \
                    `google-bert/bert-base-uncased`), or a legacy bare name such as `bert-base-uncased`.";
        return refuse(message, help);
    }
    if let Some(message) = revision_problem(revision) {
        let help = "A revision is a branch or tag (e.g. `main`, `v1.0`, `refs/pr/1`) or a 40-digit commit hash.";
        return refuse(message, help);
    }
    let (cache, source) = (root.path.display(), root.source);
    if !root.path.is_dir() {
        let state = if root.path.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return fail(
            format!("the Hugging Face cache {cache} (from {source}) {state}"),
            "",
        );
    }
    let folder = root.path.join(folder_name(id));
    if !folder.is_dir() {
        let shown = folder.display();
        let mut message =
            format!("model {id} is not in the Hugging Face cache at {cache} (looked for {shown})");
        let suggested = suggestions(&root.path, id);
        if !suggested.is_empty() {
            message.push_str(&format!("; did you mean {}?", suggested.join(" or ")));
        }
        return fail(message, "");
    }
    let snapshots = folder.join("snapshots");
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        let ref_path = folder.join("refs").join(revision);
        let shown = ref_path.display();
        match fs::read_to_string(&ref_path) {
            Ok(text) if is_commit_hash(text.trim()) => text.trim().to_string(),
            Ok(text) => {
                let held: String = text.trim().chars().take(60).collect();
                let message = format!("{shown} does not hold a commit hash (it holds {held:?})");
                return fail(message, "The cache is damaged. ");
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound || ref_path.is_dir() => {
                let refs = listing(&list_refs(&folder.join("refs")));
                let present = listing(&directory_names(&snapshots));
                return fail(
                    format!(
                        "model {id} has no revision {revision} in the Hugging Face cache (looked \
                         for {shown}); refs there: {refs}; snapshots there: {present}"
                    ),
                    "",
                );
            }
            Err(error) => return fail(format!("cannot read {shown}: {error}"), ""),
        }
    };
    let directory = snapshots.join(&commit);
    let shown = directory.display();
    if !directory.is_dir() {
        let present = listing(&directory_names(&snapshots));
        let message = if commit == revision {
            format!(
                "model {id} has no snapshot of commit {commit} in the Hugging Face cache (looked \
                 for {shown}); snapshots there: {present}"
            )
        } else {
            format!(
                "revision {revision} of model {id} points at commit {commit}, but its snapshot \
                 {shown} is missing; snapshots there: {present}"
            )
        };
        return fail(message, "");
    }
    let broken = match broken_links(&directory) {
        Ok(broken) => broken,
        Err(error) => return fail(format!("cannot read {shown}: {error}"), ""),
    };
    if !broken.is_empty() {
        let (files, what) = match broken.len() {
            1 => ("file", "is a broken link: its blob is missing"),
            _ => ("files", "are broken links: their blobs are missing"),
        };
        let names = broken.join(", ");
        let message = format!("{files} {names} of snapshot {shown} {what} (a partial download)");
        return fail(message, "The download did not finish. ");
    }
    if !directory.join("config.json").is_file() {
        return fail(
            format!(
                "snapshot {shown} of model {id} has no config.json (not a model snapshot, or a \
                 partial download)"
            ),
            "",
        );
    }
    let (id, revision) = (id.to_string(), revision.to_string());
    Ok(ResolvedHubModel {
        id,
        revision,
        commit,
        directory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::symlink;

    const ID: &str = "google-bert/bert-base-uncased";
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const OTHER: &str = "89abcdef0123456789abcdef0123456789abcdef";
    const CONFIG: &[u8] = b"{\"model_type\": \"bert\"}";

    fn cache() -> (tempfile::TempDir, CacheRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = CacheRoot {
            path: dir.path().join("hub"),
            source: "HF_HUB_CACHE",
        };
        fs::create_dir(&root.path).unwrap();
        (dir, root)
    }

    /// A blob named by its sha256 and `snapshots/<commit>/<name>` linking to it, as huggingface_hub does.
    fn add_file(root: &CacheRoot, id: &str, commit: &str, name: &str, bytes: &[u8]) -> PathBuf {
        let folder = root.path.join(folder_name(id));
        let blob: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::create_dir_all(folder.join("blobs")).unwrap();
        fs::write(folder.join("blobs").join(&blob), bytes).unwrap();
        let snapshot = folder.join("snapshots").join(commit);
        fs::create_dir_all(&snapshot).unwrap();
        symlink(format!("../../blobs/{blob}"), snapshot.join(name)).unwrap();
        snapshot
    }

    fn add_ref(root: &CacheRoot, id: &str, revision: &str, commit: &str) {
        let path = root.path.join(folder_name(id)).join("refs").join(revision);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{commit}\n")).unwrap();
    }

    fn model(id: &str, revision: &str) -> HubModel {
        HubModel {
            id: id.to_string(),
            revision: revision.to_string(),
        }
    }

    /// The problem resolving `id` at `revision`, checked to hold each of `parts`.
    fn problem_of(root: &CacheRoot, id: &str, revision: &str, parts: &[&str]) -> HubCacheProblem {
        let problem = resolve(root, &model(id, revision)).unwrap_err();
        let text = format!("{}\n{}", problem.message, problem.help);
        for part in parts {
            assert!(text.contains(part), "{part:?} missing from:\n{text}");
        }
        problem
    }

    #[test]
    fn resolves_main_through_its_ref_and_reads_the_blob_through_the_link() {
        let (_dir, root) = cache();
        let snapshot = add_file(&root, ID, COMMIT, "config.json", CONFIG);
        add_ref(&root, ID, "main", COMMIT);
        let resolved = resolve(&root, &model(ID, "main")).unwrap();
        assert_eq!(
            (resolved.commit.as_str(), &resolved.directory),
            (COMMIT, &snapshot)
        );
        let tail = format!("models--google-bert--bert-base-uncased/snapshots/{COMMIT}");
        assert!(resolved.directory.ends_with(tail));
        assert_eq!(
            fs::read(resolved.directory.join("config.json")).unwrap(),
            CONFIG
        );
    }

    #[test]
    fn resolves_tags_pull_request_refs_commits_and_bare_names() {
        let (_dir, root) = cache();
        add_file(&root, ID, COMMIT, "config.json", CONFIG);
        add_file(&root, ID, OTHER, "config.json", b"{}");
        add_ref(&root, ID, "v1.0", OTHER);
        add_ref(&root, ID, "refs/pr/1", COMMIT);
        assert_eq!(resolve(&root, &model(ID, "v1.0")).unwrap().commit, OTHER);
        assert_eq!(
            resolve(&root, &model(ID, "refs/pr/1")).unwrap().commit,
            COMMIT
        );
        let by_commit = resolve(&root, &model(ID, OTHER)).unwrap();
        assert_eq!(
            (by_commit.commit.as_str(), by_commit.revision.as_str()),
            (OTHER, OTHER)
        );
        assert_eq!(
            fs::read(by_commit.directory.join("config.json")).unwrap(),
            b"{}"
        );
        let snapshot = add_file(&root, "bert-base-uncased", COMMIT, "config.json", CONFIG);
        add_ref(&root, "bert-base-uncased", "main", COMMIT);
        let bare = resolve(&root, &model("bert-base-uncased", "main")).unwrap();
        assert_eq!(bare.directory, snapshot);
        assert!(snapshot.starts_with(root.path.join("models--bert-base-uncased")));
    }

    #[test]
    fn a_missing_cache_names_its_path_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let root = CacheRoot {
            path: dir.path().join("nowhere"),
            source: "HF_HUB_CACHE",
        };
        let expected = format!(
            "the Hugging Face cache {} (from HF_HUB_CACHE) does not exist",
            root.path.display()
        );
        let download = "`hf download google-bert/bert-base-uncased`";
        let problem = problem_of(&root, ID, "main", &[download, "HF_HUB_CACHE", "HF_HOME"]);
        assert_eq!(problem.message, expected);
        let none = no_cache_root_problem(&model(ID, "v2"));
        for variable in ["HF_HUB_CACHE", "HF_HOME", "HOME"] {
            assert!(none.message.contains(variable), "{}", none.message);
        }
        assert!(
            none.help
                .contains("`hf download google-bert/bert-base-uncased --revision v2`")
        );
    }

    #[test]
    fn a_missing_model_suggests_the_cached_ones_of_the_same_name() {
        let (_dir, root) = cache();
        add_file(&root, ID, COMMIT, "config.json", CONFIG);
        let cache = root.path.display();
        let looked = format!(
            "model bert-base-uncased is not in the Hugging Face cache at {cache} (looked for \
             {cache}/models--bert-base-uncased); did you mean google-bert/bert-base-uncased?"
        );
        let problem = problem_of(
            &root,
            "bert-base-uncased",
            "main",
            &["`hf download bert-base-uncased`"],
        );
        assert_eq!(problem.message, looked);
        add_file(&root, "bert-base-uncased", COMMIT, "config.json", CONFIG);
        let both = "did you mean bert-base-uncased or google-bert/bert-base-uncased?";
        problem_of(
            &root,
            "other/bert-base-uncased",
            "main",
            &["models--other--bert-base-uncased)", both],
        );
        let problem = problem_of(&root, "google-bert/roberta", "main", &[]);
        assert!(
            !problem.message.contains("did you mean"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn a_missing_ref_lists_the_refs_and_snapshots_there() {
        let (_dir, root) = cache();
        add_file(&root, ID, COMMIT, "config.json", CONFIG);
        add_ref(&root, ID, "main", COMMIT);
        add_ref(&root, ID, "refs/pr/1", COMMIT);
        let ref_path = root.path.join(folder_name(ID)).join("refs/v2");
        let looked = format!(
            "model {ID} has no revision v2 in the Hugging Face cache (looked for {})",
            ref_path.display()
        );
        let listed = format!("; refs there: main, refs/pr/1; snapshots there: {COMMIT}");
        problem_of(
            &root,
            ID,
            "v2",
            &[
                &looked,
                &listed,
                &format!("`hf download {ID} --revision v2`"),
            ],
        );
    }

    #[test]
    fn a_missing_snapshot_is_reported_for_refs_and_commits() {
        let (_dir, root) = cache();
        add_file(&root, ID, COMMIT, "config.json", CONFIG);
        add_ref(&root, ID, "main", OTHER);
        let snapshot = root
            .path
            .join(folder_name(ID))
            .join("snapshots")
            .join(OTHER);
        let missing = format!(
            "revision main of model {ID} points at commit {OTHER}, but its snapshot {} is missing; \
             snapshots there: {COMMIT}",
            snapshot.display()
        );
        let problem = problem_of(&root, ID, "main", &[&format!("`hf download {ID}`")]);
        assert_eq!(problem.message, missing);
        let no_commit = format!("model {ID} has no snapshot of commit {OTHER}");
        let download = format!("`hf download {ID} --revision {OTHER}`");
        problem_of(
            &root,
            ID,
            OTHER,
            &[&no_commit, &snapshot.display().to_string(), &download],
        );
    }

    #[test]
    fn a_snapshot_without_config_or_with_a_broken_link_is_a_problem() {
        let (_dir, root) = cache();
        let snapshot = add_file(&root, ID, COMMIT, "vocab.txt", b"[PAD]\n");
        add_ref(&root, ID, "main", COMMIT);
        let no_config = format!(
            "snapshot {} of model {ID} has no config.json",
            snapshot.display()
        );
        problem_of(&root, ID, "main", &[&no_config]);
        fs::write(snapshot.join("config.json"), CONFIG).unwrap();
        symlink("../../blobs/0000", snapshot.join("model.safetensors")).unwrap();
        let broken = "file model.safetensors (-> ../../blobs/0000) of snapshot";
        problem_of(
            &root,
            ID,
            "main",
            &[broken, "is a broken link", &format!("`hf download {ID}`")],
        );
    }

    #[test]
    fn malformed_ids_and_revisions_are_refused_before_reading() {
        let (_dir, root) = cache();
        problem_of(&root, "../etc", "main", &["hub id \"../etc\"", "org/name"]);
        problem_of(&root, ID, "../../x", &["not a branch, tag or commit name"]);
        problem_of(&root, ID, "", &["revision is empty"]);
    }

    #[test]
    fn the_cache_root_is_found_as_huggingface_hub_finds_it() {
        let os = |text: &str| Some(OsString::from(text));
        let root =
            |variables: CacheVariables| cache_root(&variables).map(|root| (root.path, root.source));
        let all = CacheVariables {
            hf_hub_cache: os("/c"),
            huggingface_hub_cache: os("/old"),
            hf_home: os("/h"),
            xdg_cache_home: os("/x"),
            home: os("/home/u"),
        };
        assert_eq!(root(all.clone()), Some(("/c".into(), "HF_HUB_CACHE")));
        let without = |mut variables: CacheVariables, count: usize| {
            let slots = [
                &mut variables.hf_hub_cache,
                &mut variables.huggingface_hub_cache,
                &mut variables.hf_home,
                &mut variables.xdg_cache_home,
            ];
            for slot in slots.into_iter().take(count) {
                *slot = os("");
            }
            variables
        };
        assert_eq!(
            root(without(all.clone(), 1)),
            Some(("/old".into(), "HUGGINGFACE_HUB_CACHE"))
        );
        assert_eq!(
            root(without(all.clone(), 2)),
            Some(("/h/hub".into(), "HF_HOME"))
        );
        assert_eq!(
            root(without(all.clone(), 3)),
            Some(("/x/huggingface/hub".into(), "XDG_CACHE_HOME"))
        );
        assert_eq!(
            root(without(all.clone(), 4)),
            Some(("/home/u/.cache/huggingface/hub".into(), DEFAULT_SOURCE))
        );
        let tilde = CacheVariables {
            hf_hub_cache: os("~/hf"),
            home: os("/home/u"),
            ..CacheVariables::default()
        };
        assert_eq!(root(tilde), Some(("/home/u/hf".into(), "HF_HUB_CACHE")));
        assert_eq!(
            root(without(
                CacheVariables {
                    home: os(""),
                    ..all
                },
                4
            )),
            None
        );
        assert_eq!(root(CacheVariables::default()), None);
    }

    #[test]
    fn ids_and_commits_are_checked_as_the_hub_does() {
        let (long, too_long) = ("a".repeat(96), "a".repeat(97));
        for good in ["bert-base-uncased", ID, "a/b", "A.b_c-1/x", long.as_str()] {
            assert_eq!(id_problem(good), None, "{good}");
        }
        let bad = [
            "", "a/b/c", "-a", "a-", ".a", "a.", "a--b", "a..b", "a b", "a/", "/b", "a/-b",
        ];
        for id in bad.into_iter().chain([too_long.as_str()]) {
            assert!(id_problem(id).is_some(), "{id:?}");
        }
        assert!(id_problem("a/b/c").unwrap().contains("more than one"));
        assert!(id_problem("a b").unwrap().contains("' '"));
        assert!(is_commit_hash(COMMIT) && !is_commit_hash("main"));
        assert!(!is_commit_hash(&COMMIT.to_uppercase()) && !is_commit_hash(&COMMIT[1..]));
    }
}
