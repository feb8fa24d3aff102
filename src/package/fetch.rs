//! Packages fetched over HTTP: `tarball:` archives, and dbt Hub packages
//! (`package: dbt-labs/dbt_utils`), whose version dbt resolves from the
//! Hub's index (`{hub}/api/v1/{org}/{name}.json`, `DBT_PACKAGE_HUB_URL`
//! naming another hub) to a tarball. Downloads go through `object_store`'s
//! HTTP client; archives are gzip'd tar files unpacked by the `tar` crate,
//! which refuses entries that would land outside the target directory.

use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value as Json;

/// The public hub, as dbt names it.
const HUB: &str = "https://hub.getdbt.com";

/// The hub to resolve packages from.
pub(super) fn hub_url() -> String {
    std::env::var("DBT_PACKAGE_HUB_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| HUB.to_owned())
}

/// The body of a `GET url`.
pub(super) fn get(url: &str) -> Result<bytes::Bytes, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` is not an http(s) URL"));
    }
    let store = object_store::http::HttpBuilder::new()
        .with_url(parsed.origin().ascii_serialization())
        .with_client_options(object_store::ClientOptions::new().with_allow_http(parsed.scheme() == "http"))
        .build()
        .map_err(|e| e.to_string())?;
    let path = object_store::path::Path::from_url_path(parsed.path()).map_err(|e| e.to_string())?;
    let download = async {
        use object_store::ObjectStoreExt as _;
        let got = store.get(&path).await.map_err(|e| describe(url, &e))?;
        got.bytes().await.map_err(|e| describe(url, &e))
    };
    // `ferry deps` runs inside the binary's runtime; a library caller may not.
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(download)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(download),
    }
}

fn describe(url: &str, e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => format!("`{url}` was not found (404)"),
        other => format!("cannot download `{url}`: {}", first_line(&other.to_string())),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Unpacks a `.tar.gz` into `into` and returns the directory in it that
/// holds `dbt_project.yml`: the top, or its one folder (GitHub's archives
/// put everything under `repo-version/`).
pub(super) fn unpack(archive: &[u8], into: &Utf8Path) -> Result<Utf8PathBuf, String> {
    fs_err::create_dir_all(into).map_err(|e| e.to_string())?;
    let gz = flate2::read::GzDecoder::new(archive);
    tar::Archive::new(gz).unpack(into).map_err(|e| format!("not a readable .tar.gz archive: {e}"))?;
    if into.join("dbt_project.yml").is_file() {
        return Ok(into.to_owned());
    }
    let dirs: Vec<Utf8PathBuf> = fs_err::read_dir(into)
        .map_err(|e| e.to_string())?
        .filter_map(|e| Utf8PathBuf::try_from(e.ok()?.path()).ok())
        .filter(|p| p.is_dir())
        .collect();
    match dirs.as_slice() {
        [one] if one.join("dbt_project.yml").is_file() => Ok(one.clone()),
        _ => Err("the archive has no `dbt_project.yml` at its top or in its one folder".to_owned()),
    }
}

/// A Hub package's version that `wanted` allows (`"1.3.0"`, `">=1.0.0"`,
/// or a list of such ranges, all of which must hold), the highest that
/// the hub has; pre-releases only when asked for. Returns the version and
/// its tarball's URL.
pub(super) fn resolve_hub(
    hub: &str,
    package: &str,
    wanted: Option<&Json>,
    prerelease: bool,
) -> Result<(String, String), String> {
    let index_url = format!("{}/api/v1/{package}.json", hub.trim_end_matches('/'));
    let body = get(&index_url).map_err(|e| format!("package `{package}` is not on the hub at {hub}: {e}"))?;
    let index: Json =
        serde_json::from_slice(&body).map_err(|e| format!("the hub's index of `{package}` is not JSON: {e}"))?;
    let req = requirement(wanted)?;
    let versions = index.get("versions").and_then(Json::as_object).ok_or("the hub's index lists no `versions`")?;
    let best = versions
        .keys()
        .filter_map(|v| semver::Version::parse(v).ok().map(|parsed| (parsed, v)))
        .filter(|(v, _)| (prerelease || v.pre.is_empty()) && req.as_ref().is_none_or(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0));
    let Some((_, version)) = best else {
        let mut known: Vec<&String> = versions.keys().collect();
        known.sort();
        let shown: Vec<&str> = known.iter().rev().take(8).map(|s| s.as_str()).collect();
        return Err(format!(
            "no version of `{package}` matches {}; the hub has {}",
            wanted.map(Json::to_string).unwrap_or_else(|| "any".to_owned()),
            shown.join(", ")
        ));
    };
    let tarball = versions[version]
        .pointer("/downloads/tarball")
        .and_then(Json::as_str)
        .ok_or_else(|| format!("the hub names no tarball for `{package}` {version}"))?;
    Ok((version.clone(), tarball.to_owned()))
}

/// dbt's version ranges as a semver requirement: a bare version is exact.
fn requirement(wanted: Option<&Json>) -> Result<Option<semver::VersionReq>, String> {
    let items: Vec<String> = match wanted {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect()
        }
        Some(Json::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(other) => vec![other.to_string()],
    };
    let parts: Vec<String> = items
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty())
        .map(|i| if i.starts_with(['<', '>', '=', '~', '^']) { i.to_owned() } else { format!("={i}") })
        .collect();
    let text = parts.join(", ");
    semver::VersionReq::parse(&text).map(Some).map_err(|e| format!("`{text}` is not a version range: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbt_version_ranges_read_as_semver() {
        let req = |j: Json| requirement(Some(&j)).unwrap().unwrap();
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(req(serde_json::json!("1.3.0")).matches(&v("1.3.0")));
        assert!(!req(serde_json::json!("1.3.0")).matches(&v("1.3.1")));
        let range = req(serde_json::json!([">=1.0.0", "<2.0.0"]));
        assert!(range.matches(&v("1.9.2")) && !range.matches(&v("2.0.0")));
        assert!(req(serde_json::json!(">=0.9.0, <0.10.0")).matches(&v("0.9.6")));
        assert!(requirement(Some(&serde_json::json!("one"))).is_err());
    }
}
