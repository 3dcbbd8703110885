//! What preflight learns of a host, in one round trip: a script prints `key=value` lines (kernel,
//! resources, ports, commands, features proven by trying them), parsed into `Facts`.

use super::*;

/// Facts printed as `key=value` lines; `listen` repeats.
pub(super) const FACTS_SCRIPT: &str = r#"# provision: gather preflight facts
echo "uid=$(id -u)"
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
echo "system_state=$(systemctl is-system-running 2>/dev/null)"
. /etc/os-release 2>/dev/null && echo "os=$ID $VERSION_ID"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "cpus=$(getconf _NPROCESSORS_ONLN)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
# where the kubelet and the runtime keep their files: total and free bytes
echo "disk=$(df -PB1 /var/lib 2>/dev/null | awk 'NR==2 {print $2, $4}')"
echo "swaps=$(tail -n +2 /proc/swaps | grep -c .)"
echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
echo "cgroup_controllers=$(awk 'NR>1 && $4==1 {printf "%s ", $1}' /proc/cgroups 2>/dev/null)$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
for m in overlay br_netfilter vxlan bridge; do modprobe -q $m 2>/dev/null; done
grep -qw overlay /proc/filesystems && echo "feature=overlay"
# /sys/module is hidden in some containers: creating the links in a throwaway namespace is proof
probe_link() { [ -d /sys/module/$1 ] || unshare -n ip link add provision-probe type $1 $2 2>/dev/null; }
probe_link bridge && echo "feature=bridge"
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo "feature=br_netfilter"
probe_link vxlan "id 1 dstport 4789" && echo "feature=vxlan"
# limits that change the configuration rather than stop the install
( echo -999 > /proc/self/oom_score_adj ) 2>/dev/null || echo "oom_score_locked=1"
( cat /proc/sys/net/netfilter/nf_conntrack_max > /proc/sys/net/netfilter/nf_conntrack_max ) 2>/dev/null || echo "conntrack_read_only=1"
# what kube-router, the policy engine, runs (policy_engine::HOST_COMMANDS), and the engines
# of a VIP endpoint (ha::vip::HOST_COMMANDS, ha::api_proxy::HOST_COMMANDS)
echo "missing_commands=$(for c in ipset iptables-save iptables-restore keepalived curl haproxy; do command -v $c >/dev/null 2>&1 || [ -x /usr/sbin/$c ] || printf '%s ' $c; done)"
# services' drop-ins, from every directory systemd reads them from (the checks keep those of
# the units provision writes): one that replaces ExecStart (kubeadm's package ships
# 10-kubeadm.conf) runs another command
for f in /etc/systemd/system/*.service.d/*.conf /run/systemd/system/*.service.d/*.conf \
         /usr/local/lib/systemd/system/*.service.d/*.conf /usr/lib/systemd/system/*.service.d/*.conf \
         /lib/systemd/system/*.service.d/*.conf; do
  [ -f "$f" ] || continue
  u=${f%.service.d/*}; u=${u##*/}
  if grep -qE '^[[:space:]]*ExecStart[[:space:]]*=' "$f"; then k=command; else k=settings; fi
  echo "dropin=$u $k $(readlink -f "$f")"
done
# CNI configurations: the runtime gives pods the network of the first by name
for f in /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist /etc/cni/net.d/*.json; do
  [ -f "$f" ] && echo "cni_config=${f##*/}"
done
echo "hostname=$(hostname)"
echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"
if command -v ss >/dev/null; then
  # the port and the first process name (users:(("sshd",pid=1,fd=3))), in one awk, not a
  # sed per socket
  ss -ltnpH 2>/dev/null | awk '{ port = $4; sub(/.*:/, "", port); name = "";
    if (match($0, /\(\("[^"]*"/)) name = substr($0, RSTART + 3, RLENGTH - 4);
    print "listen=" port " " name }'
else
  echo "no_ss=1"
fi
for a in $(ip -o addr show 2>/dev/null | awk '{print $4}'); do echo "addr=${a%/*}"; echo "net=$a"; done
echo "time=$(date +%s.%N)"
"#;

/// A drop-in file of a unit provision writes: it applies on top of provision's unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    /// The unit's name without `.service`.
    pub unit: String,
    /// It sets `ExecStart=`: the unit runs its command, not provision's.
    pub replaces_command: bool,
    pub path: String,
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub values: BTreeMap<String, String>,
    /// port -> process holding it ("" when unknown)
    pub listening: BTreeMap<u16, String>,
    pub addresses: Vec<String>,
    /// The addresses with their prefix length (`10.0.0.11/24`).
    pub networks: Vec<String>,
    pub features: Vec<String>,
    /// Drop-ins of the units provision writes (each path once: /lib may be /usr/lib).
    pub drop_ins: Vec<DropIn>,
    /// The CNI configuration files in /etc/cni/net.d, by name.
    pub cni_configs: Vec<String>,
    /// Host clock minus the operator's clock, in seconds, measured at the round trip's midpoint.
    pub clock_offset: f64,
    /// How long connecting and gathering took.
    pub seconds: f64,
}

pub(super) async fn gather(ctx: &Ctx, host: &Host) -> Result<Facts, String> {
    let started = std::time::Instant::now();
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let before = now();
    let out = session.run(FACTS_SCRIPT).await.map_err(|e| e.to_string())?;
    let after = now();
    let mut f = Facts::parse(&out);
    if let Ok(t) = f.get("time").parse::<f64>() {
        f.clock_offset = t - (before + after) / 2.0;
    }
    f.seconds = started.elapsed().as_secs_f64();
    Ok(f)
}

impl Facts {
    pub fn parse(text: &str) -> Facts {
        let mut f = Facts::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "listen" => {
                    let (port, proc) = v.split_once(' ').unwrap_or((v, ""));
                    if let Ok(p) = port.parse() {
                        f.listening.insert(p, proc.trim().to_string());
                    }
                }
                "addr" => f.addresses.push(v.to_string()),
                "net" => f.networks.push(v.to_string()),
                "feature" => f.features.push(v.to_string()),
                "cni_config" => f.cni_configs.push(v.to_string()),
                "dropin" => {
                    let mut parts = v.splitn(3, ' ');
                    if let (Some(unit), Some(kind), Some(path)) =
                        (parts.next(), parts.next(), parts.next())
                        && !f.drop_ins.iter().any(|d| d.path == path)
                    {
                        f.drop_ins.push(DropIn {
                            unit: unit.to_string(),
                            replaces_command: kind == "command",
                            path: path.to_string(),
                        });
                    }
                }
                _ => {
                    f.values.insert(k.to_string(), v.trim().to_string());
                }
            }
        }
        f
    }

    pub(super) fn get(&self, k: &str) -> &str {
        self.values.get(k).map(String::as_str).unwrap_or("")
    }

    pub(super) fn num(&self, k: &str) -> Option<u64> {
        self.get(k).parse().ok()
    }
}
