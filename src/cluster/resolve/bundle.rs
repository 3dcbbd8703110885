//! Where the bundle comes from: upstream, a mirror, or a directory.

use super::*;

impl Resolver<'_> {
    pub(super) fn bundle(&mut self) -> Option<BundleSource> {
        let b = self.loaded.inventory.spec.bundle.clone();
        match (&b.mirror, &b.dir) {
            (Some(_), Some(_)) => {
                self.error(
                    "spec.bundle",
                    "names both a mirror and a dir".into(),
                    "keep one: mirror (a base URL) or dir (an unpacked bundle)",
                );
                None
            }
            (Some(url), None) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    self.error(
                        "spec.bundle.mirror",
                        format!("\"{url}\" is not an http(s) URL"),
                        "write a base URL such as https://mirror.example.com/k8s",
                    );
                    return None;
                }
                Some(BundleSource::Mirror {
                    url: url.trim_end_matches('/').to_string(),
                    ca_file: b.ca_file.as_deref().map(|p| self.loaded.resolve_path(p)),
                })
            }
            (None, Some(dir)) => {
                if b.ca_file.is_some() {
                    self.error(
                        "spec.bundle.caFile",
                        "applies to a mirror only".into(),
                        "remove caFile, or use mirror:",
                    );
                }
                Some(BundleSource::Dir {
                    path: self.loaded.resolve_path(dir),
                })
            }
            (None, None) => {
                if b.ca_file.is_some() {
                    self.error(
                        "spec.bundle.caFile",
                        "applies to a mirror only".into(),
                        "remove caFile, or add mirror:",
                    );
                }
                Some(BundleSource::Upstream)
            }
        }
    }
}
