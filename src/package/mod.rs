//! dbt packages: the project's `packages.yml` (or `dependencies.yml`),
//! installed by `ferry deps` under `packages-install-path` (dbt's
//! `dbt_packages/`) and pinned in `package-lock.yml`.
//!
//! A `local:` package is linked (a symbolic link to its directory, as dbt
//! does); a `git:` package is cloned with the `git` command, checked out at
//! its `revision` (or the lock file's pin), and cut to its `subdirectory`;
//! a `tarball:` package and a dbt Hub package are downloaded and unpacked
//! (`fetch`), a Hub package at the highest version its range allows,
//! pinned in the lock to that version.
//! Packages that the installed packages list are installed too. Everything
//! is installed beside the old install and swapped in at the end, so a
//! failed `ferry deps` leaves the previous packages as they were. Loading
//! what is installed is `project`'s.

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::project::yaml;

mod fetch;

/// The files that list a project's packages, in the order dbt reads them.
pub const SPEC_FILES: [&str; 2] = ["packages.yml", "dependencies.yml"];
/// The lock file `ferry deps` writes beside them.
pub const LOCK_FILE: &str = "package-lock.yml";

/// Failures that are not the project's fault: the file system.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("failed to {action} `{path}`")]
    Io {
        action: &'static str,
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Utf8Path) -> impl FnOnce(std::io::Error) -> PackageError {
    let path = path.to_owned();
    move |source| PackageError::Io { action, path, source }
}

/// One entry of `packages:`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "text")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<Utf8PathBuf>,
    #[serde(default, rename = "warn-unpinned", skip_serializing)]
    pub warn_unpinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing)]
    pub install_prerelease: Option<bool>,
}

/// A revision written as a number (`revision: 1.0`) is its text.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    packages: Vec<Spec>,
    #[serde(default)]
    projects: Option<Json>,
}

/// `package-lock.yml`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct LockFile {
    packages: Vec<Spec>,
    /// A hash of the packages file's rendered text: the lock holds while it matches.
    packages_hash: String,
}

/// What `ferry deps` installed.
#[derive(Debug, Default)]
pub struct Installed {
    /// Each package: its name, where it came from, and the pin (a commit).
    pub packages: Vec<(String, String)>,
    /// Where the packages file was (none: nothing to install).
    pub spec_file: Option<Utf8PathBuf>,
    pub warnings: Vec<Diagnostic>,
}

/// `ferry deps`: installs the packages that the project at `root` lists,
/// where its project file's `packages-install-path` says.
pub fn deps(root: &Utf8Path, upgrade: bool) -> Result<Result<Installed, Vec<Diagnostic>>, PackageError> {
    let Some(name) = crate::project::config::PROJECT_FILES.iter().find(|f| root.join(f).is_file()) else {
        return Ok(Err(vec![Diagnostic::error(Code::ProjectFile, format!("no project file in `{root}`"))]));
    };
    let text = fs_err::read_to_string(root.join(name)).map_err(io("read", &root.join(name)))?;
    let file = SourceFile::new(Utf8PathBuf::from(*name), text);
    let project = match crate::project::config::ProjectFile::parse(file, &mut Vec::new()) {
        Ok(p) => p,
        Err(d) => return Ok(Err(vec![*d])),
    };
    install(root, &project.packages_install_path, upgrade)
}

/// Installs the packages that the project at `root` lists into
/// `install_path` (project-relative). With `upgrade`, the lock file's pins
/// are ignored and written anew. `Ok(Err(..))`: the project's mistakes.
pub fn install(
    root: &Utf8Path,
    install_path: &Utf8Path,
    upgrade: bool,
) -> Result<Result<Installed, Vec<Diagnostic>>, PackageError> {
    let mut found = SPEC_FILES.iter().filter(|f| root.join(f).is_file());
    let Some(spec_name) = found.next() else { return Ok(Ok(Installed::default())) };
    if let Some(other) = found.next() {
        return Ok(Err(vec![
            Diagnostic::error(Code::ProjectFile, format!("both `{spec_name}` and `{other}` list packages"))
                .with_help("keep one of them, as dbt does"),
        ]));
    }
    let (specs, hash) = match read_specs(root, Utf8Path::new(spec_name)) {
        Ok(read) => read,
        Err(d) => return Ok(Err(vec![*d])),
    };
    let lock_path = root.join(LOCK_FILE);
    let pins: Vec<Spec> = match fs_err::read_to_string(&lock_path) {
        Ok(text) if !upgrade => match serde_saphyr::from_str::<LockFile>(&text) {
            Ok(lock) if lock.packages_hash == hash => lock.packages,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let target = root.join(install_path);
    let staging = sibling(&target, "installing");
    if staging.exists() {
        fs_err::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    fs_err::create_dir_all(&staging).map_err(io("create", &staging))?;
    let mut installer = Installer { staging: staging.clone(), pins, done: BTreeMap::new(), warnings: Vec::new() };
    let result = installer.all(root, specs);
    if let Err(diags) = result {
        let _ = fs_err::remove_dir_all(&staging);
        return Ok(Err(diags));
    }
    // Swap the new install in: the old one goes aside first, then away.
    let old = sibling(&target, "previous");
    if target.exists() || target.is_symlink() {
        if old.exists() {
            fs_err::remove_dir_all(&old).map_err(io("remove", &old))?;
        }
        fs_err::rename(&target, &old).map_err(io("move aside", &target))?;
    }
    fs_err::rename(&staging, &target).map_err(io("move into place", &staging))?;
    if old.exists() {
        fs_err::remove_dir_all(&old).map_err(io("remove", &old))?;
    }
    let lock = LockFile {
        packages: installer.done.values().filter(|d| d.top_level).map(|d| d.pinned.clone()).collect(),
        packages_hash: hash,
    };
    let text = serde_saphyr::to_string(&lock).unwrap_or_default();
    let tmp = sibling(&lock_path, "tmp");
    fs_err::write(&tmp, text).map_err(io("write", &tmp))?;
    fs_err::rename(&tmp, &lock_path).map_err(io("write", &lock_path))?;
    Ok(Ok(Installed {
        packages: installer.done.into_iter().map(|(name, d)| (name, d.described)).collect(),
        spec_file: Some(Utf8PathBuf::from(*spec_name)),
        warnings: installer.warnings,
    }))
}

/// `dir/.name.what`: a path beside `path`.
fn sibling(path: &Utf8Path, what: &str) -> Utf8PathBuf {
    let name = path.file_name().unwrap_or("packages");
    path.with_file_name(format!(".{name}.{what}"))
}

/// Reads a packages file: renders it with `env_var` as dbt does, then
/// parses it. Returns the entries and a hash of the rendered text.
fn read_specs(base: &Utf8Path, rel: &Utf8Path) -> Result<(Vec<Spec>, String), Box<Diagnostic>> {
    let path = base.join(rel);
    let text = fs_err::read_to_string(&path).map_err(|e| {
        Box::new(Diagnostic::error(Code::ProjectFile, format!("cannot read `{path}`: {e}")).in_file(rel))
    })?;
    let mut env = minijinja::Environment::new();
    env.add_function("env_var", crate::template::functions::env_var);
    let rendered = env.render_str(&text, ()).map_err(|e| {
        Box::new(
            Diagnostic::error(Code::JinjaRender, format!("cannot render `{rel}`: {}", e.detail().unwrap_or("")))
                .in_file(rel),
        )
    })?;
    let file = SourceFile::new(rel.to_owned(), rendered.clone());
    let node = yaml::parse(&file)?;
    if node.is_null() {
        return Ok((Vec::new(), hash(&rendered)));
    }
    let spec: SpecFile = node.deserialize_into(&file, &format!("`{rel}`"))?;
    let _ = spec.projects;
    for (entry, node) in spec.packages.iter().zip(node.get("packages").map(|n| n.items()).unwrap_or_default()) {
        let kinds = [entry.local.is_some(), entry.git.is_some(), entry.tarball.is_some(), entry.package.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(Box::new(
                Diagnostic::error(
                    Code::YamlShape,
                    "a package entry needs exactly one of `local`, `git`, `tarball` or `package`",
                )
                .with_label(Label::new(&file, node.span.clone())),
            ));
        }
    }
    Ok((spec.packages, hash(&rendered)))
}

fn hash(text: &str) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(text.as_bytes()))
}

/// One installed package.
#[derive(Debug)]
struct Done {
    /// The entry as the lock file records it (a git revision is a commit).
    pinned: Spec,
    /// Where it came from, for the user.
    described: String,
    /// Listed by the project itself (not by another package).
    top_level: bool,
}

struct Installer {
    staging: Utf8PathBuf,
    pins: Vec<Spec>,
    done: BTreeMap<String, Done>,
    warnings: Vec<Diagnostic>,
}

impl Installer {
    /// Installs `specs` (the project's) and every package they list in turn.
    fn all(&mut self, root: &Utf8Path, specs: Vec<Spec>) -> Result<(), Vec<Diagnostic>> {
        let mut queue: VecDeque<(Spec, Utf8PathBuf, bool)> =
            specs.into_iter().map(|s| (s, root.to_owned(), true)).collect();
        let mut clones = 0;
        while let Some((spec, base, top_level)) = queue.pop_front() {
            clones += 1;
            let (dir, pinned, described) = self.fetch(&spec, &base, clones).map_err(|d| vec![*d])?;
            let name = package_name(&dir).map_err(|d| vec![*d])?;
            if let Some(earlier) = self.done.get(&name) {
                if !dir.is_symlink() {
                    let _ = fs_err::remove_dir_all(&dir);
                } else {
                    let _ = fs_err::remove_file(&dir);
                }
                if !same_source(&earlier.pinned, &pinned) {
                    return Err(vec![
                        Diagnostic::error(
                            Code::DuplicateName,
                            format!(
                                "package `{name}` is listed twice, from different sources: {} and {described}",
                                earlier.described
                            ),
                        )
                        .with_help("list it once, or pin both entries to the same source and revision"),
                    ]);
                }
                continue;
            }
            let home = self.staging.join(&name);
            fs_err::rename(&dir, &home).map_err(|e| vec![io_diag(&dir, &e)])?;
            // The package's own packages, relative to where it really is.
            let real =
                fs_err::canonicalize(&home).ok().and_then(|p| Utf8PathBuf::try_from(p).ok()).unwrap_or(home.clone());
            for file in SPEC_FILES {
                if real.join(file).is_file() {
                    let (specs, _) = read_specs(&real, Utf8Path::new(file)).map_err(|d| vec![*d])?;
                    queue.extend(specs.into_iter().map(|s| (s, real.clone(), false)));
                    break;
                }
            }
            let mut pinned = pinned;
            pinned.name = Some(name.clone());
            self.done.insert(name, Done { pinned, described, top_level });
        }
        Ok(())
    }

    /// Fetches one package into the staging directory under a temporary
    /// name; returns that path, the entry as pinned, and its description.
    fn fetch(
        &mut self,
        spec: &Spec,
        base: &Utf8Path,
        n: usize,
    ) -> Result<(Utf8PathBuf, Spec, String), Box<Diagnostic>> {
        let tmp = self.staging.join(format!(".fetch-{n}"));
        if let Some(local) = &spec.local {
            let source = base.join(local);
            let real = fs_err::canonicalize(&source)
                .ok()
                .and_then(|p| Utf8PathBuf::try_from(p).ok())
                .filter(|p| p.join("dbt_project.yml").is_file())
                .ok_or_else(|| {
                    Box::new(
                        Diagnostic::error(
                            Code::ProjectFile,
                            format!("local package `{local}` has no `dbt_project.yml`"),
                        )
                        .with_note(format!("looked in `{source}`")),
                    )
                })?;
            link(&real, &tmp).map_err(|e| Box::new(io_diag(&tmp, &e)))?;
            let pinned = Spec { local: Some(local.clone()), ..Default::default() };
            return Ok((tmp, pinned, format!("{local} (local)")));
        }
        if let Some(url) = &spec.git {
            let pin = self
                .pins
                .iter()
                .find(|p| p.git.as_deref() == Some(url) && p.subdirectory == spec.subdirectory)
                .and_then(|p| p.revision.clone());
            let revision = pin.or_else(|| spec.revision.clone());
            if spec.revision.is_none() && spec.warn_unpinned != Some(false) {
                self.warnings.push(
                    Diagnostic::warning(
                        Code::ProjectFile,
                        format!("git package `{url}` has no `revision`: it follows the default branch"),
                    )
                    .with_help("pin a tag or commit with `revision:`, or set `warn-unpinned: false`"),
                );
            }
            let clone = self.staging.join(format!(".clone-{n}"));
            git(None, &["clone", "--quiet", url, clone.as_str()])?;
            if let Some(rev) = &revision {
                git(Some(&clone), &["checkout", "--quiet", rev])?;
            }
            let commit = git(Some(&clone), &["rev-parse", "HEAD"])?;
            let dir = match &spec.subdirectory {
                Some(sub) => {
                    let inner = clone.join(sub);
                    if !inner.join("dbt_project.yml").is_file() {
                        return Err(Box::new(Diagnostic::error(
                            Code::ProjectFile,
                            format!("git package `{url}` has no `dbt_project.yml` in subdirectory `{sub}`"),
                        )));
                    }
                    fs_err::rename(&inner, &tmp).map_err(|e| Box::new(io_diag(&inner, &e)))?;
                    let _ = fs_err::remove_dir_all(&clone);
                    tmp
                }
                None => clone,
            };
            let short = &commit[..commit.len().min(10)];
            let pinned = Spec {
                git: Some(url.clone()),
                revision: Some(commit.clone()),
                subdirectory: spec.subdirectory.clone(),
                ..Default::default()
            };
            return Ok((dir, pinned, format!("{url} at {short}")));
        }
        if let Some(url) = &spec.tarball {
            let dir = self
                .unpacked(url, n)
                .map_err(|e| Box::new(Diagnostic::error(Code::ProjectFile, format!("tarball package `{url}`: {e}"))))?;
            fs_err::rename(&dir, &tmp).map_err(|e| Box::new(io_diag(&dir, &e)))?;
            let _ = fs_err::remove_dir_all(self.staging.join(format!(".unpack-{n}")));
            let pinned = Spec { tarball: Some(url.clone()), name: spec.name.clone(), ..Default::default() };
            return Ok((tmp, pinned, format!("{url} (tarball)")));
        }
        let package = spec.package.clone().unwrap_or_default();
        let hub = fetch::hub_url();
        // The lock's exact version holds until `--upgrade`.
        let pin = self.pins.iter().find(|p| p.package.as_deref() == Some(&package)).and_then(|p| p.version.clone());
        let wanted = pin.as_ref().or(spec.version.as_ref());
        let (version, url) =
            fetch::resolve_hub(&hub, &package, wanted, spec.install_prerelease == Some(true)).map_err(|e| {
                Box::new(
                    Diagnostic::error(Code::ProjectFile, format!("hub package `{package}`: {e}"))
                        .with_help("check the name and `version:`; without network access, name the package's git repository and tag instead (`git:` with `revision:`)"),
                )
            })?;
        let dir = self.unpacked(&url, n).map_err(|e| {
            Box::new(Diagnostic::error(Code::ProjectFile, format!("hub package `{package}` {version}: {e}")))
        })?;
        fs_err::rename(&dir, &tmp).map_err(|e| Box::new(io_diag(&dir, &e)))?;
        let _ = fs_err::remove_dir_all(self.staging.join(format!(".unpack-{n}")));
        let pinned =
            Spec { package: Some(package.clone()), version: Some(Json::from(version.clone())), ..Default::default() };
        Ok((tmp, pinned, format!("{package} {version} (hub)")))
    }

    /// Downloads and unpacks a `.tar.gz`; returns the package's directory.
    fn unpacked(&self, url: &str, n: usize) -> Result<Utf8PathBuf, String> {
        let archive = fetch::get(url)?;
        fetch::unpack(&archive, &self.staging.join(format!(".unpack-{n}")))
    }
}

fn same_source(a: &Spec, b: &Spec) -> bool {
    (a.local.is_some() && a.local == b.local)
        || (a.tarball.is_some() && a.tarball == b.tarball)
        || (a.package.is_some() && a.package == b.package && a.version == b.version)
        || (a.git.is_some() && a.git == b.git && a.revision == b.revision && a.subdirectory == b.subdirectory)
}

/// The `name` in a package's `dbt_project.yml`.
fn package_name(dir: &Utf8Path) -> Result<String, Box<Diagnostic>> {
    let path = dir.join("dbt_project.yml");
    let text = fs_err::read_to_string(&path).map_err(|e| {
        Box::new(Diagnostic::error(Code::ProjectFile, format!("a package has no readable `dbt_project.yml`: {e}")))
    })?;
    let file = SourceFile::new(path.clone(), text);
    let node = yaml::parse(&file)?;
    match node.get("name").and_then(yaml::Node::as_str) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => {
            Err(Box::new(Diagnostic::error(Code::ProjectFile, format!("package project file `{path}` has no `name`"))))
        }
    }
}

/// Runs `git` (in `dir`), returning its trimmed output; a failure is a
/// diagnostic with git's own message.
fn git(dir: Option<&Utf8Path>, args: &[&str]) -> Result<String, Box<Diagnostic>> {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
    let out = cmd.output().map_err(|e| {
        Box::new(
            Diagnostic::error(Code::ProjectFile, format!("cannot run `git`: {e}"))
                .with_help("install git: ferry deps clones git packages with it"),
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Box::new(Diagnostic::error(
            Code::ProjectFile,
            format!("`git {}` failed: {}", args.join(" "), stderr.trim()),
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(unix)]
fn link(target: &Utf8Path, link: &Utf8Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn link(target: &Utf8Path, link: &Utf8Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

fn io_diag(path: &Utf8Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(Code::ProjectFile, format!("cannot install into `{path}`: {e}"))
}
