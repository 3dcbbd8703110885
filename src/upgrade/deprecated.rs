//! Objects reached through API versions the target release no longer serves. The running API
//! server says which of its versions go away, and when: every request to a deprecated version
//! is answered with a warning "… is deprecated in v1.X+, unavailable in v1.Y+". So each served
//! version that is not its group's preferred one is listed once; those whose warning names a
//! release at or before the target are reported with their objects. No table of removals is
//! compiled in, so the check stays right for releases after this one.

use crate::version::Version;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
use kube::Client;
use serde::Serialize;

/// A resource of a group version the target release removes, and the objects it holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removed {
    /// `example.com/v1beta1`
    pub group_version: String,
    /// `widgets`
    pub resource: String,
    /// The minor that stops serving it.
    pub unavailable_in: String,
    /// The API server's warning, as it says it (what to use instead, often).
    pub warning: String,
    /// `namespace/name` (or `name`) of each object.
    pub objects: Vec<String>,
}

/// The release a deprecation warning says the API is unavailable in: `(1, 37)`.
pub fn unavailable_in(warning: &str) -> Option<(u32, u32)> {
    let rest = &warning[warning.find("unavailable in v")? + "unavailable in v".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The text of a `Warning` header (`299 - "text"`).
fn warning_text(header: &str) -> String {
    let t = header.trim();
    let t = t.strip_prefix("299 - ").unwrap_or(t);
    t.trim_matches('"').to_string()
}

fn listable(r: &APIResource) -> bool {
    !r.name.contains('/') && r.verbs.iter().any(|v| v == "list")
}

/// Lists `resource` through `group_version`: the warnings said, and the objects' names.
async fn list(
    client: &Client,
    group_version: &str,
    resource: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let uri = format!("/apis/{group_version}/{resource}");
    let request = http::Request::get(&uri)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = client
        .send(request)
        .await
        .map_err(|e| format!("listing {uri}: {e}"))?;
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let status = response.status();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("listing {uri}: {e}"))?;
    if !status.is_success() {
        // not listable by the admin after all (an aggregated API that is down): no objects known
        return Ok((warnings, Vec::new()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("listing {uri}: {e}"))?;
    let objects = value["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            match o["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            }
        })
        .collect();
    Ok((warnings, objects))
}

/// Every resource with objects whose group version `to` no longer serves.
pub async fn removed_by(client: &Client, to: Version) -> Result<Vec<Removed>, String> {
    let groups = client
        .list_api_groups()
        .await
        .map_err(|e| format!("discovering the API groups: {e}"))?;
    let mut out = Vec::new();
    for g in groups.groups {
        let preferred = g
            .preferred_version
            .as_ref()
            .map(|p| p.group_version.clone());
        for v in g.versions {
            if Some(&v.group_version) == preferred.as_ref() {
                continue;
            }
            let Ok(resources) = client.list_api_group_resources(&v.group_version).await else {
                continue;
            };
            for r in resources.resources.iter().filter(|r| listable(r)) {
                let (warnings, objects) = list(client, &v.group_version, &r.name).await?;
                let Some((warning, (major, minor))) = warnings
                    .iter()
                    .find_map(|w| unavailable_in(w).map(|at| (w.clone(), at)))
                else {
                    continue;
                };
                if (major, minor) <= (to.major, to.minor) && !objects.is_empty() {
                    out.push(Removed {
                        group_version: v.group_version.clone(),
                        resource: r.name.clone(),
                        unavailable_in: format!("{major}.{minor}"),
                        warning,
                        objects,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The refusal that names them, when there are any.
pub fn refusal(removed: &[Removed], to: Version) -> Option<String> {
    if removed.is_empty() {
        return None;
    }
    let each: Vec<String> = removed
        .iter()
        .map(|r| {
            format!(
                "{} {} ({}): {}",
                r.group_version,
                r.resource,
                r.objects.len(),
                r.objects.join(", ")
            )
        })
        .collect();
    Some(format!(
        "objects are reached through API versions Kubernetes {to} no longer serves: {}. Move their manifests and clients to the served versions (the API server says: {}), or pass --ignore-deprecated-apis",
        each.join("; "),
        removed[0].warning
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_removal_release_is_read_from_the_warning() {
        let w = warning_text(
            "299 - \"policy/v1beta1 PodSecurityPolicy is deprecated in v1.21+, unavailable in v1.25+\"",
        );
        assert_eq!(
            w,
            "policy/v1beta1 PodSecurityPolicy is deprecated in v1.21+, unavailable in v1.25+"
        );
        assert_eq!(unavailable_in(&w), Some((1, 25)));
        assert_eq!(
            unavailable_in(
                "example.com/v1beta1 Widget is deprecated; unavailable in v1.37+; use v1"
            ),
            Some((1, 37))
        );
        assert_eq!(
            unavailable_in("example.com/v1beta1 Widget is deprecated"),
            None
        );
    }

    #[test]
    fn the_refusal_names_each_object_and_the_way_out() -> Result<(), Box<dyn std::error::Error>> {
        let r = Removed {
            group_version: "example.com/v1beta1".into(),
            resource: "widgets".into(),
            unavailable_in: "1.37".into(),
            warning: "use example.com/v1".into(),
            objects: vec!["default/w1".into()],
        };
        let to = Version::parse("1.37.2")?;
        let text = refusal(&[r], to).ok_or("a removed API in use was not refused")?;
        assert!(
            text.contains("example.com/v1beta1 widgets (1): default/w1")
                && text.contains("--ignore-deprecated-apis"),
            "{text}"
        );
        assert_eq!(refusal(&[], to), None);
        Ok(())
    }
}
