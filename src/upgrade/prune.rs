//! After a successful upgrade: each component keeps its current version's directory (what the
//! symlinks point at) and the newest older one (a rollback's target); older ones go. Nothing
//! newer than the current version is touched (a staged version an interrupted run left).

use crate::bundle::HOST_ROOT;
use crate::cluster::Host;
use crate::phases::step::{self, Applied, Step};
use crate::run::Ctx;

pub struct Prune;

/// Prints `remove DIR` for each directory to remove; removes them unless `dry`.
fn script(dry: bool) -> String {
    format!(
        r#"targets=$(for l in /usr/local/bin/* /opt/cni/bin/* /opt/*; do [ -L "$l" ] && readlink "$l"; done)
for c in {HOST_ROOT}/*/; do
  c=${{c%/}}
  cur=$(printf '%s\n' "$targets" | sed -n "s|^$c/\([^/]*\).*|\1|p" | sort -u | head -n 1)
  [ -n "$cur" ] || continue
  older=$(ls -1 "$c" | grep -v '^\.' | {{ cat; echo "$cur"; }} | sort -uV | sed "/^$cur\$/,\$d")
  keep=$(printf '%s\n' "$older" | tail -n 1)
  for v in $older; do
    [ "$v" = "$keep" ] && continue
    echo "remove $c/$v"
    {remove}
  done
done
true
"#,
        remove = if dry { "" } else { r#"rm -rf -- "$c/$v""# }
    )
}

#[async_trait::async_trait]
impl Step for Prune {
    type Shared = ();

    async fn dry_run(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, ()>,
    ) -> Result<step::After, String> {
        run(ctx, host, true).await
    }

    async fn after(
        &self,
        ctx: &Ctx,
        host: &Host,
        _: &Applied<'_, ()>,
    ) -> Result<step::After, String> {
        run(ctx, host, false).await
    }
}

async fn run(ctx: &Ctx, host: &Host, dry: bool) -> Result<step::After, String> {
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let out = session
        .run(&script(dry))
        .await
        .map_err(|e| format!("removing old versions: {e}"))?;
    let verb = if dry { "would remove" } else { "removed" };
    Ok(step::After {
        changes: out
            .lines()
            .filter_map(|l| l.strip_prefix("remove "))
            .map(|d| format!("{verb} {d} (older than the previous version)"))
            .collect(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    /// The script on a directory tree standing for a host's (a real shell, real files).
    #[test]
    fn keeps_the_current_and_the_previous_version_only() -> R {
        let root = std::env::temp_dir().join(format!("prune-{}", std::process::id()));
        let opt = root.join("opt");
        let bin = root.join("bin");
        for v in ["1.35.8", "1.36.4", "1.37.2", "1.38.0"] {
            std::fs::create_dir_all(opt.join("kubelet").join(v))?;
        }
        std::fs::create_dir_all(opt.join("etcd/3.6.14"))?;
        std::fs::create_dir_all(&bin)?;
        std::os::unix::fs::symlink(opt.join("kubelet/1.37.2/kubelet"), bin.join("kubelet"))?;
        std::os::unix::fs::symlink(opt.join("etcd/3.6.14/etcd"), bin.join("etcd"))?;
        let text = script(false)
            .replace(HOST_ROOT, &opt.display().to_string())
            .replace("/usr/local/bin/*", &format!("{}/*", bin.display()));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&text)
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            said.trim(),
            format!("remove {}/kubelet/1.35.8", opt.display()),
            "{text}"
        );
        let mut left: Vec<String> = std::fs::read_dir(opt.join("kubelet"))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        left.sort();
        assert_eq!(left, ["1.36.4", "1.37.2", "1.38.0"]);
        assert!(opt.join("etcd/3.6.14").is_dir());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
