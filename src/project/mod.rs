//! A ferry (or dbt) project on disk: the project file, models, seeds,
//! macros, schema files, docs and tests, read into typed nodes.
//!
//! Loading reads files and validates their shape; it does not render Jinja
//! (that is `template`), read configs into typed settings (`manifest`) or
//! plan SQL (`run`, on the engine). Profiles, the targets' connections, are
//! the backends' (`backend::profiles`).

pub mod config;
pub mod nodes;
pub mod schema;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Map, Value as Json};

use crate::diagnostic::{Code, Diagnostic, Label, SourceFile};
use crate::template::merge_config;
use config::{ConfigTree, PROJECT_FILES, ProjectFile};
use nodes::{Model, NodeRef, Origin, Seed, SourceTable, Test, TestKind};
use schema::Fixture;

/// Failure to find or read a project at all.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no `ferry.yml` or `dbt_project.yml` found in `{0}` or any parent directory")]
    NotFound(Utf8PathBuf),
    #[error("failed to read `{path}`")]
    Read {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the project directory `{0}` is not valid UTF-8")]
    NonUtf8(std::path::PathBuf),
}

/// A loaded project.
#[derive(Debug)]
pub struct Project {
    /// Absolute path of the project root.
    pub root: Utf8PathBuf,
    pub file: ProjectFile,
    pub models: Vec<Model>,
    pub seeds: Vec<Seed>,
    pub sources: Vec<SourceTable>,
    pub tests: Vec<Test>,
    pub macro_files: Vec<Arc<SourceFile>>,
    /// The packages installed under `packages-install-path` (`ferry deps`).
    pub packages: Vec<Package>,
    /// `{% docs name %}` blocks by name.
    pub docs: BTreeMap<String, String>,
}

/// An installed package: its name (from its project file) and its macros.
#[derive(Debug)]
pub struct Package {
    pub name: String,
    /// The project-relative directory it is installed in.
    pub dir: Utf8PathBuf,
    pub macro_files: Vec<Arc<SourceFile>>,
}

/// Whether a file under `test-paths` is a unit test's fixture (in a
/// `fixtures` folder): rows, not a singular test, as in dbt.
fn is_fixture_file(path: &Utf8Path) -> bool {
    path.parent().is_some_and(|d| d.components().any(|c| c.as_str() == "fixtures"))
}

/// Whether a file under `test-paths` is in a `generic/` folder at its top,
/// where dbt keeps generic tests (macro files).
fn is_generic_test_file(test_paths: &[Utf8PathBuf], path: &Utf8Path) -> bool {
    test_paths.iter().any(|dir| path.strip_prefix(dir).is_ok_and(|rest| rest.starts_with("generic")))
}

/// Finds the project root: the nearest directory at or above `start` that
/// holds a project file.
pub fn find_root(start: &Utf8Path) -> Result<Utf8PathBuf, ProjectError> {
    let start = if start.is_absolute() {
        start.to_owned()
    } else {
        let cwd = std::env::current_dir().map_err(|source| ProjectError::Read { path: start.to_owned(), source })?;
        let cwd = Utf8PathBuf::try_from(cwd).map_err(|e| ProjectError::NonUtf8(e.into_path_buf()))?;
        cwd.join(start)
    };
    // `./` adds nothing but noise to every path shown (`/work/shop/./models`).
    let start: Utf8PathBuf = start.components().filter(|c| *c != camino::Utf8Component::CurDir).collect();
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if PROJECT_FILES.iter().any(|f| d.join(f).is_file()) {
            return Ok(d.to_owned());
        }
        dir = d.parent();
    }
    Err(ProjectError::NotFound(start))
}

/// The outcome of loading: the project (if no error stopped it) and every
/// diagnostic found along the way.
#[derive(Debug)]
pub struct Loaded {
    pub project: Option<Project>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Project {
    /// Reads the project at `root`. `vars` (from `--vars`) override the
    /// project's `vars`.
    pub fn load(root: &Utf8Path, vars: &Map<String, Json>) -> Result<Loaded, ProjectError> {
        let mut l = Loader { root: root.to_owned(), diags: Vec::new() };
        let Some(name) = PROJECT_FILES.iter().find(|f| root.join(f).is_file()) else {
            return Err(ProjectError::NotFound(root.to_owned()));
        };
        let project_file = l.source_file(Utf8Path::new(name))?;
        let mut file = match ProjectFile::parse(project_file, &mut l.diags) {
            Ok(f) => f,
            Err(d) => {
                l.diags.push(*d);
                return Ok(Loaded { project: None, diagnostics: l.diags });
            }
        };
        file.vars.extend(vars.clone());
        let project = l.assemble(file)?;
        let failed = l.diags.iter().any(Diagnostic::is_error);
        Ok(Loaded { project: (!failed).then_some(project), diagnostics: l.diags })
    }

    /// The project's name (first part of every fqn).
    pub fn name(&self) -> &str {
        &self.file.name
    }
}

struct Loader {
    root: Utf8PathBuf,
    diags: Vec<Diagnostic>,
}

/// The root project, or an installed package, whose resources are read.
struct Scope<'a> {
    file: &'a ProjectFile,
    /// The project-relative directory the package is installed in (empty
    /// for the root project).
    base: Utf8PathBuf,
    package: bool,
}

impl Scope<'_> {
    /// The scope's resource directories, relative to the root project.
    fn dirs(&self, dirs: &[Utf8PathBuf]) -> Vec<Utf8PathBuf> {
        dirs.iter().map(|d| self.base.join(d)).collect()
    }
}

/// A project file's config trees, one per resource type.
struct Trees<'a> {
    models: ConfigTree<'a>,
    seeds: ConfigTree<'a>,
    snapshots: ConfigTree<'a>,
    tests: ConfigTree<'a>,
}

impl<'a> Trees<'a> {
    fn new(file: &'a ProjectFile) -> Self {
        Trees {
            models: ConfigTree::new(&file.file, &file.models),
            seeds: ConfigTree::new(&file.file, &file.seeds),
            snapshots: ConfigTree::new(&file.file, &file.snapshots),
            tests: ConfigTree::new(&file.file, &file.tests),
        }
    }

    /// Unknown `+keys` and config paths that matched nothing (model
    /// folders named in `folders`).
    fn warnings(&self, folders: &[String]) -> Vec<Diagnostic> {
        let mut out = self.models.warnings("models", folders);
        out.extend(self.snapshots.warnings("snapshots", &[]));
        out.extend(self.seeds.warnings("seeds", &[]));
        out
    }
}

/// What one project or package declares.
struct Resources {
    models: Vec<Model>,
    seeds: Vec<Seed>,
    sources: Vec<SourceTable>,
    tests: Vec<Test>,
    docs: BTreeMap<String, String>,
    folders: Vec<String>,
}

impl Loader {
    /// Reads a project file. One that is not UTF-8 is a diagnostic at its
    /// first bad byte (and is read with that byte replaced, so the rest of
    /// the project still gets checked).
    fn source_file(&mut self, rel: &Utf8Path) -> Result<Arc<SourceFile>, ProjectError> {
        let path = self.root.join(rel);
        let bytes = fs_err::read(&path).map_err(|source| ProjectError::Read { path, source })?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(rel.to_owned(), text)),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bad = e.as_bytes()[at];
                let before = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
                let file = SourceFile::new(rel.to_owned(), String::from_utf8_lossy(e.as_bytes()).into_owned());
                let diag = Diagnostic::error(Code::ProjectFile, format!("`{rel}` is not UTF-8 text"))
                    .with_label(Label::new(&file, before.len()..before.len() + '\u{FFFD}'.len_utf8()))
                    .with_note(format!("byte 0x{bad:02X} here does not begin a UTF-8 character"))
                    .with_help(
                        "save the file as UTF-8 (a Latin-1 or Windows-1252 editor setting writes such bytes); source data files may declare their `encoding` instead",
                    );
                self.diags.push(diag);
                Ok(file)
            }
        }
    }

    /// Files under the given project-relative dirs with one of `exts`,
    /// sorted, skipping hidden directories.
    fn files(&self, dirs: &[Utf8PathBuf], exts: &[&str]) -> Vec<Utf8PathBuf> {
        let mut out = Vec::new();
        for dir in dirs {
            let walker = walkdir::WalkDir::new(self.root.join(dir)).sort_by_file_name().into_iter();
            for entry in walker.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')) {
                let Ok(entry) = entry else { continue };
                if !entry.file_type().is_file() {
                    continue;
                }
                let Ok(path) = Utf8PathBuf::try_from(entry.into_path()) else { continue };
                if path.extension().is_some_and(|e| exts.contains(&e))
                    && let Ok(rel) = path.strip_prefix(&self.root)
                {
                    out.push(rel.to_owned());
                }
            }
        }
        out.dedup();
        out
    }

    fn assemble(&mut self, mut file: ProjectFile) -> Result<Project, ProjectError> {
        let packages = self.packages(&file)?;
        let root_trees = Trees::new(&file);
        let root = Scope { file: &file, base: Utf8PathBuf::new(), package: false };
        let mut all = self.resources(&root, &root_trees, None)?;
        let mut macro_files = Vec::new();
        for path in self.files(&file.macro_paths, &["sql"]) {
            macro_files.push(self.source_file(&path)?);
        }
        // dbt reads `tests/generic/` as macros: generic tests, not singular ones.
        for path in self.files(&file.test_paths, &["sql"]) {
            if is_generic_test_file(&file.test_paths, &path) {
                macro_files.push(self.source_file(&path)?);
            }
        }
        let mut package_vars = Map::new();
        for (package, pkg_file) in &packages {
            let trees = Trees::new(pkg_file);
            let scope = Scope { file: pkg_file, base: package.dir.clone(), package: true };
            let r = self.resources(&scope, &trees, Some(&root_trees))?;
            all.models.extend(r.models);
            all.seeds.extend(r.seeds);
            all.sources.extend(r.sources);
            all.tests.extend(r.tests);
            for (name, text) in r.docs {
                all.docs.entry(name).or_insert(text);
            }
            // A package's own `vars` are its defaults; the project's win.
            for (k, v) in &pkg_file.vars {
                package_vars.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self.diags.extend(root_trees.warnings(&all.folders));
        drop(root_trees);
        for (k, v) in package_vars {
            file.vars.entry(k).or_insert(v);
        }
        self.check_duplicate_sources(&all.sources);
        self.check_name_clashes(&all.models, &all.seeds);
        let Resources { models, seeds, sources, tests, docs, .. } = all;
        let packages = packages.into_iter().map(|(p, _)| p).collect();
        Ok(Project { root: self.root.clone(), file, models, seeds, sources, tests, macro_files, packages, docs })
    }

    /// The models, snapshots, seeds, sources, tests and docs of the root
    /// project or of one installed package. A package's resources take the
    /// package's own project-file config, then the root project's over it
    /// (`models: {dbt_utils: {+enabled: false}}`), as in dbt.
    fn resources(&mut self, scope: &Scope, trees: &Trees, root: Option<&Trees>) -> Result<Resources, ProjectError> {
        let file = scope.file;
        let mut schemas = Vec::new();
        let schema_dirs: Vec<Utf8PathBuf> = scope.dirs(
            &file.model_paths.iter().chain(&file.seed_paths).chain(&file.snapshot_paths).cloned().collect::<Vec<_>>(),
        );
        for path in self.files(&schema_dirs, &["yml", "yaml"]) {
            let f = self.source_file(&path)?;
            match schema::parse(&f, &mut self.diags) {
                Ok(s) => schemas.push(s),
                Err(d) => self.diags.push(*d),
            }
        }
        let mut docs = BTreeMap::new();
        for path in self.files(&scope.dirs(&file.docs_paths), &["md"]) {
            let f = self.source_file(&path)?;
            docs.extend(crate::template::docs_blocks(&f));
        }

        let mut model_patches = HashMap::new();
        let mut seed_patches = HashMap::new();
        let mut snapshot_patches = HashMap::new();
        let mut sources = Vec::new();
        let mut decls = Vec::new();
        let mut unit_tests = Vec::new();
        for mut s in schemas {
            unit_tests.append(&mut s.unit_tests);
            for p in s.models {
                decls.extend(p.tests.iter().map(|t| (NodeRef::Model(p.name.clone()), t.clone())));
                self.insert_patch(&mut model_patches, p, "model");
            }
            for p in s.seeds {
                decls.extend(p.tests.iter().map(|t| (NodeRef::Seed(p.name.clone()), t.clone())));
                self.insert_patch(&mut seed_patches, p, "seed");
            }
            for p in s.snapshots {
                decls.extend(p.tests.iter().map(|t| (NodeRef::Model(p.name.clone()), t.clone())));
                self.insert_patch(&mut snapshot_patches, p, "snapshot");
            }
            for mut src in s.sources {
                let r = NodeRef::Source(src.table.source.clone(), src.table.name.clone());
                decls.extend(src.tests.into_iter().map(|t| (r.clone(), t)));
                src.table.package = scope.package.then(|| file.name.clone());
                sources.push(src.table);
            }
        }
        let resolve = |own: &ConfigTree, over: Option<&ConfigTree>, fqn: &[String]| {
            let mut config = own.resolve(fqn);
            for (k, v) in over.map(|t| t.resolve(fqn)).unwrap_or_default() {
                merge_config(&mut config, &k, v);
            }
            config
        };
        let (mut models, folders) =
            self.models(scope, &mut model_patches, &|fqn| resolve(&trees.models, root.map(|r| &r.models), fqn))?;
        models.extend(self.snapshots(scope, &mut snapshot_patches, &|fqn| {
            resolve(&trees.snapshots, root.map(|r| &r.snapshots), fqn)
        })?);
        let seeds = self.seeds(scope, &mut seed_patches, &|fqn| resolve(&trees.seeds, root.map(|r| &r.seeds), fqn));
        for (kind, patches) in [("model", model_patches), ("seed", seed_patches), ("snapshot", snapshot_patches)] {
            for p in patches.into_values() {
                decls.retain(|(r, _)| !matches!(r, NodeRef::Model(n) | NodeRef::Seed(n) if *n == p.name));
                // A package's loose ends are its author's business.
                if !scope.package {
                    self.diags.push(
                        Diagnostic::warning(
                            Code::UnusedConfigPath,
                            format!("schema entry `{}` matches no {kind}", p.name),
                        )
                        .with_label(Label::new(&p.origin.file, p.origin.span.clone())),
                    );
                }
            }
        }
        let mut tests = self.tests(scope, decls, &|fqn| resolve(&trees.tests, root.map(|r| &r.tests), fqn))?;
        let test_dirs = scope.dirs(&file.test_paths);
        // The fixture files under the test paths, found once for every unit test.
        let names_a_file = |u: &schema::UnitTestDecl| {
            u.given.iter().map(|(_, f)| f).chain([&u.expect]).any(|f| matches!(f, Fixture::File { .. }))
        };
        let fixture_files: Vec<Utf8PathBuf> = match unit_tests.iter().any(names_a_file) {
            true => self.files(&test_dirs, &["csv", "sql"]).into_iter().filter(|p| is_fixture_file(p)).collect(),
            false => Vec::new(),
        };
        for mut u in unit_tests {
            let fixtures = u.given.iter_mut().map(|(_, f)| f).chain(std::iter::once(&mut u.expect));
            let places = (test_dirs.as_slice(), fixture_files.as_slice());
            if let Err(d) = fixtures.into_iter().try_for_each(|f| self.read_fixture(f, places, &u.name, &u.origin)) {
                self.diags.push(*d);
                continue;
            }
            let mut fqn = vec![file.name.clone(), u.model.clone(), u.name.clone()];
            let mut config = resolve(&trees.tests, root.map(|r| &r.tests), &fqn);
            for (k, v) in u.config {
                merge_config(&mut config, &k, v);
            }
            fqn.truncate(3);
            tests.push(Test {
                name: u.name,
                fqn,
                config,
                kind: TestKind::Unit {
                    model: u.model,
                    given: u.given,
                    expect: u.expect,
                    overrides: u.overrides.map(Arc::new),
                    origin: u.origin,
                },
            });
        }
        Ok(Resources { models, seeds, sources, tests, docs, folders })
    }

    /// Reads a unit test's `fixture:` file into its rows: `<name>.csv` (or
    /// `.sql`) among `fixture_files`, those in a `fixtures` folder anywhere
    /// under the `test_dirs`.
    fn read_fixture(
        &mut self,
        fixture: &mut Fixture,
        (test_dirs, fixture_files): (&[Utf8PathBuf], &[Utf8PathBuf]),
        test: &str,
        origin: &Origin,
    ) -> Result<(), Box<Diagnostic>> {
        let Fixture::File { name, sql } = fixture else { return Ok(()) };
        let wanted = format!("{name}.{}", if *sql { "sql" } else { "csv" });
        let found = fixture_files.iter().find(|p| p.file_name() == Some(wanted.as_str())).cloned();
        let at = || Label::new(&origin.file, origin.span.clone());
        let Some(path) = found else {
            let dirs: Vec<String> = test_dirs.iter().map(|d| format!("`{d}`")).collect();
            return Err(Box::new(
                Diagnostic::error(Code::YamlShape, format!("unit test `{test}`: fixture `{name}` not found"))
                    .with_label(at())
                    .with_help(format!("put `{wanted}` in a `fixtures` folder under {}", dirs.join(", "))),
            ));
        };
        let text = match self.source_file(&path) {
            Ok(f) => f.text.to_string(),
            Err(e) => {
                return Err(Box::new(
                    Diagnostic::error(Code::YamlShape, format!("unit test `{test}`: fixture `{path}`: {e}"))
                        .with_label(at()),
                ));
            }
        };
        *fixture = if *sql { Fixture::Sql(text) } else { Fixture::Csv(text) };
        Ok(())
    }

    /// The packages installed under `packages-install-path`, each a
    /// directory with a `dbt_project.yml`, in name order, with its parsed
    /// project file. Their project files' unknown keys are the package
    /// author's business, not warned of.
    fn packages(&mut self, file: &ProjectFile) -> Result<Vec<(Package, ProjectFile)>, ProjectError> {
        let install = &file.packages_install_path;
        let Ok(entries) = fs_err::read_dir(self.root.join(install)) else { return Ok(Vec::new()) };
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect();
        names.sort();
        let mut packages: Vec<(Package, ProjectFile)> = Vec::new();
        for dir_name in names {
            let dir = install.join(&dir_name);
            let project_file = dir.join("dbt_project.yml");
            if !self.root.join(&project_file).is_file() {
                continue;
            }
            let source = self.source_file(&project_file)?;
            let parsed = match ProjectFile::parse(source, &mut Vec::new()) {
                Ok(p) => p,
                Err(d) => {
                    self.diags.push(*d);
                    continue;
                }
            };
            if parsed.name == file.name || packages.iter().any(|(p, _)| p.name == parsed.name) {
                self.diags.push(
                    Diagnostic::error(
                        Code::DuplicateName,
                        format!(
                            "package `{}` in `{dir}` has the name of another package or of this project",
                            parsed.name
                        ),
                    )
                    .in_file(&parsed.file.path)
                    .with_help("run `ferry deps` again to reinstall the packages that `packages.yml` lists"),
                );
                continue;
            }
            let macro_dirs: Vec<Utf8PathBuf> = parsed.macro_paths.iter().map(|p| dir.join(p)).collect();
            let test_dirs: Vec<Utf8PathBuf> = parsed.test_paths.iter().map(|p| dir.join(p)).collect();
            let mut macro_files = Vec::new();
            for path in self.files(&macro_dirs, &["sql"]) {
                macro_files.push(self.source_file(&path)?);
            }
            for path in self.files(&test_dirs, &["sql"]) {
                if is_generic_test_file(&test_dirs, &path) {
                    macro_files.push(self.source_file(&path)?);
                }
            }
            packages.push((Package { name: parsed.name.clone(), dir, macro_files }, parsed));
        }
        Ok(packages)
    }

    fn insert_patch(&mut self, map: &mut HashMap<String, schema::Patch>, p: schema::Patch, kind: &str) {
        if let Some(first) = map.get(&p.name) {
            self.diags.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("{kind} `{}` is described twice in schema files", p.name),
                )
                .with_label(Label::new(&p.origin.file, p.origin.span.clone()))
                .with_secondary(
                    Label::new(&first.origin.file, first.origin.span.clone()).with_text("first described here"),
                ),
            );
            return;
        }
        map.insert(p.name.clone(), p);
    }

    fn check_duplicate_sources(&mut self, sources: &[SourceTable]) {
        let mut seen: HashMap<(&str, &str), &Origin> = HashMap::new();
        for s in sources {
            if let Some(first) = seen.insert((&s.source, &s.name), &s.origin) {
                self.diags.push(
                    Diagnostic::error(
                        Code::DuplicateName,
                        format!("source table `{}.{}` is declared twice", s.source, s.name),
                    )
                    .with_label(Label::new(&s.origin.file, s.origin.span.clone()))
                    .with_secondary(Label::new(&first.file, first.span.clone()).with_text("first declared here")),
                );
            }
        }
    }

    /// The models, and the names of the folders they are in (for the
    /// project file's unused-path warnings).
    fn models(
        &mut self,
        scope: &Scope,
        patches: &mut HashMap<String, schema::Patch>,
        config_for: &dyn Fn(&[String]) -> Map<String, Json>,
    ) -> Result<(Vec<Model>, Vec<String>), ProjectError> {
        let file = scope.file;
        let roots = scope.dirs(&file.model_paths);
        let mut models = Vec::new();
        let mut folders = Vec::new();
        for path in self.files(&roots, &["sql"]) {
            let fqn = fqn_for(&file.name, &roots, &path);
            folders.extend(fqn[1..fqn.len() - 1].iter().cloned());
            let config = config_for(&fqn);
            let name = fqn.last().cloned().unwrap_or_default();
            let patch = patches.remove(&name);
            let source = self.source_file(&path)?;
            models.push(patched_model(name, (fqn, source, config), patch, false));
        }
        folders.sort();
        folders.dedup();
        Ok((models, folders))
    }

    /// The snapshots: a `{% snapshot name %}` block in a SQL file under
    /// `snapshot-paths` (one per file), or a `snapshots:` entry of a schema
    /// file with a `relation` (dbt 1.9). Both become models that are
    /// [`Model::snapshot`]; the block's text keeps its lines, so
    /// diagnostics point into the file.
    fn snapshots(
        &mut self,
        scope: &Scope,
        patches: &mut HashMap<String, schema::Patch>,
        config_for: &dyn Fn(&[String]) -> Map<String, Json>,
    ) -> Result<Vec<Model>, ProjectError> {
        let file = scope.file;
        let roots = scope.dirs(&file.snapshot_paths);
        let mut found: Vec<(String, Vec<String>, Arc<SourceFile>)> = Vec::new();
        for path in self.files(&roots, &["sql"]) {
            let source = self.source_file(&path)?;
            let mut fqn = fqn_for(&file.name, &roots, &path);
            match snapshot_block(&source) {
                Ok(Some((name, text))) => {
                    fqn.pop();
                    fqn.push(name.clone());
                    found.push((name, fqn, SourceFile::new(path.clone(), text)));
                }
                Ok(None) => {}
                Err(d) => self.diags.push(*d),
            }
        }
        let defined: Vec<String> = patches.values().filter(|p| p.relation.is_some()).map(|p| p.name.clone()).collect();
        for name in defined {
            let Some(p) = patches.get(&name) else { continue };
            let (Some(relation), Some(dir)) = (&p.relation, p.origin.file.path.parent()) else { continue };
            let text = format!("select * from {{{{ {relation} }}}}\n");
            let path = dir.join(format!("{name}.sql"));
            let fqn = fqn_for(&file.name, &roots, &path);
            found.push((name, fqn, SourceFile::new(path, text)));
        }
        let mut snapshots = Vec::new();
        for (name, fqn, source) in found {
            let config = config_for(&fqn);
            let patch = patches.remove(&name);
            snapshots.push(patched_model(name, (fqn, source, config), patch, true));
        }
        Ok(snapshots)
    }

    fn seeds(
        &mut self,
        scope: &Scope,
        patches: &mut HashMap<String, schema::Patch>,
        config_for: &dyn Fn(&[String]) -> Map<String, Json>,
    ) -> Vec<Seed> {
        let roots = scope.dirs(&scope.file.seed_paths);
        let mut seeds = Vec::new();
        for path in self.files(&roots, &["csv"]) {
            let fqn = fqn_for(&scope.file.name, &roots, &path);
            let name = fqn.last().cloned().unwrap_or_default();
            let mut config = config_for(&fqn);
            let patch = patches.remove(&name);
            if let Some(p) = &patch {
                for (k, v) in &p.config {
                    merge_config(&mut config, k, v.clone());
                }
            }
            seeds.push(Seed {
                name,
                path,
                fqn,
                config,
                description: patch.as_ref().map(|p| p.description.clone()).unwrap_or_default(),
                columns: patch.map(|p| p.columns).unwrap_or_default(),
            });
        }
        seeds
    }

    fn check_name_clashes(&mut self, models: &[Model], seeds: &[Seed]) {
        let mut seen: HashMap<&str, &Utf8Path> = HashMap::new();
        let all = models
            .iter()
            .map(|m| (m.name.as_str(), m.file.path.as_path()))
            .chain(seeds.iter().map(|s| (s.name.as_str(), s.path.as_path())));
        for (name, path) in all {
            if let Some(first) = seen.insert(name, path) {
                self.diags.push(
                    Diagnostic::error(Code::DuplicateName, format!("two resources are named `{name}`"))
                        .in_file(path)
                        .with_note(format!(
                            "`{first}` and `{path}` both define `{name}`; `ref('{name}')` would be ambiguous"
                        ))
                        .with_help("rename one of the files (names are file names without the extension)"),
                );
            }
        }
    }

    fn tests(
        &mut self,
        scope: &Scope,
        decls: Vec<(NodeRef, schema::TestDecl)>,
        config_for: &dyn Fn(&[String]) -> Map<String, Json>,
    ) -> Result<Vec<Test>, ProjectError> {
        let file = scope.file;
        let mut tests = Vec::new();
        for (target, d) in decls {
            let target_name = match &target {
                NodeRef::Model(n) | NodeRef::Seed(n) => n.clone(),
                NodeRef::Source(s, t) => format!("source_{s}_{t}"),
            };
            let name = d.custom_name.clone().unwrap_or_else(|| {
                // dbt prefixes a package's test with the package: `dbt_utils_expression_is_true_..`.
                let test = match &d.package {
                    Some(p) => format!("{p}_{}", d.test_name),
                    None => d.test_name.clone(),
                };
                nodes::generic_test_name(&test, &target_name, d.column.as_deref(), &d.args)
            });
            let path = d.origin.file.path.strip_prefix(&scope.base).unwrap_or(&d.origin.file.path);
            let folder: Vec<String> =
                path.parent().map(|p| p.iter().skip(1).map(str::to_owned).collect()).unwrap_or_default();
            let mut fqn = vec![file.name.clone()];
            fqn.extend(folder);
            fqn.push(name.clone());
            let mut config = config_for(&fqn);
            for (k, v) in d.config {
                merge_config(&mut config, &k, v);
            }
            tests.push(Test {
                name,
                fqn,
                config,
                kind: TestKind::Generic {
                    test_name: d.test_name,
                    package: d.package,
                    attached_to: target,
                    column: d.column,
                    args: d.args,
                    origin: d.origin,
                },
            });
        }
        let roots = scope.dirs(&file.test_paths);
        for path in self.files(&roots, &["sql"]) {
            if is_generic_test_file(&roots, &path) || is_fixture_file(&path) {
                continue;
            }
            let fqn = fqn_for(&file.name, &roots, &path);
            let config = config_for(&fqn);
            tests.push(Test {
                name: fqn.last().cloned().unwrap_or_default(),
                fqn,
                config,
                kind: TestKind::Singular { file: self.source_file(&path)? },
            });
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &mut tests {
            let n = seen.entry(t.name.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                t.name = format!("{}_{}", t.name, n);
            }
        }
        Ok(tests)
    }
}

/// `[project, folders under the resource path.., file stem]`.
/// The `{% snapshot name %}` block of a snapshot file: its name, and the
/// file's text with everything outside the block blanked (lines kept).
/// `None` for a file without one; an error for an unclosed block or a
/// second one.
fn snapshot_block(file: &Arc<SourceFile>) -> Result<Option<(String, String)>, Box<Diagnostic>> {
    static OPEN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{%-?\s*snapshot\s+([A-Za-z_][A-Za-z0-9_]*)\s*-?%\}").expect("valid regex")
    });
    static CLOSE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\{%-?\s*endsnapshot\s*-?%\}").expect("valid regex"));
    let text = &file.text;
    let Some(open) = OPEN.captures(text) else { return Ok(None) };
    let (whole, name) = (open.get(0).expect("match"), open[1].to_owned());
    let Some(close) = CLOSE.find_at(text, whole.end()) else {
        return Err(Box::new(
            Diagnostic::error(Code::ProjectFile, format!("snapshot `{name}` has no `{{% endsnapshot %}}`"))
                .with_label(Label::new(file, whole.range()))
                .with_help("close the block with `{% endsnapshot %}`"),
        ));
    };
    if let Some(second) = OPEN.find_at(text, close.end()) {
        return Err(Box::new(
            Diagnostic::error(Code::ProjectFile, format!("`{}` holds a second snapshot block", file.path))
                .with_label(Label::new(file, second.range()))
                .with_help("ferry reads one `{% snapshot %}` block per file: move this one into a file of its own"),
        ));
    }
    let blank = |s: &str| s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect::<String>();
    let body = format!(
        "{}{}{}",
        blank(&text[..whole.end()]),
        &text[whole.end()..close.start()],
        blank(&text[close.start()..])
    );
    Ok(Some((name, body)))
}

fn fqn_for(project: &str, roots: &[Utf8PathBuf], path: &Utf8Path) -> Vec<String> {
    let rel = roots.iter().find_map(|r| path.strip_prefix(r).ok()).unwrap_or(path);
    let mut fqn = vec![project.to_owned()];
    if let Some(parent) = rel.parent() {
        fqn.extend(parent.iter().map(str::to_owned));
    }
    fqn.push(rel.file_stem().unwrap_or_default().to_owned());
    fqn
}

/// A model (or snapshot) with its schema-file entry, if it has one, merged
/// in: the entry's `config:` over the project tree's.
fn patched_model(
    name: String,
    (fqn, file, mut config): (Vec<String>, Arc<SourceFile>, Map<String, Json>),
    patch: Option<schema::Patch>,
    snapshot: bool,
) -> Model {
    if let Some(p) = &patch {
        for (k, v) in &p.config {
            merge_config(&mut config, k, v.clone());
        }
    }
    Model {
        name,
        file,
        fqn,
        config,
        description: patch.as_ref().map(|p| p.description.clone()).unwrap_or_default(),
        columns: patch.as_ref().map(|p| p.columns.clone()).unwrap_or_default(),
        rules: patch.as_ref().map(|p| p.rules.clone()).unwrap_or_default(),
        version: patch.as_ref().and_then(|p| p.version.clone()),
        patch: patch.map(|p| p.origin),
        snapshot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqn_uses_folders_under_the_model_path() {
        let roots = vec![Utf8PathBuf::from("models")];
        assert_eq!(
            fqn_for("shop", &roots, Utf8Path::new("models/staging/stg_orders.sql")),
            vec!["shop", "staging", "stg_orders"]
        );
        assert_eq!(fqn_for("shop", &roots, Utf8Path::new("models/orders.sql")), vec!["shop", "orders"]);
    }
}
