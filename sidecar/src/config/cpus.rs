//! The default number of render workers: the CPU quota of the container's cgroup (v2
//! `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up and at most the CPUs
//! this process may run on; without a quota, those CPUs. So a pod limited to 2 CPUs on a
//! 64-core node starts 2 workers, not 64. (`std::thread::available_parallelism` also reads the
//! quota, but rounds it down: 1.5 CPUs would give 1 worker and leave half a CPU idle.)

use std::path::Path;

/// The CPUs a quota allows, rounded up, from the cgroup files' contents: `cpu_max` is cgroup
/// v2's `cpu.max` (`"QUOTA PERIOD"` or `"max PERIOD"`); `cfs_quota_us` and `cfs_period_us`
/// are cgroup v1's (a quota of `-1`: none). v2 wins when both are given. `None` when there is
/// no quota or the contents do not parse.
pub fn quota_cpus(
    cpu_max: Option<&str>,
    cfs_quota_us: Option<&str>,
    cfs_period_us: Option<&str>,
) -> Option<usize> {
    let (quota, period) = match cpu_max {
        Some(line) => {
            let mut fields = line.split_whitespace();
            let (quota, period) = (fields.next()?, fields.next().unwrap_or("100000"));
            if quota == "max" || fields.next().is_some() {
                return None;
            }
            (quota.parse::<i64>().ok()?, period.parse::<i64>().ok()?)
        }
        None => (
            cfs_quota_us?.trim().parse::<i64>().ok()?,
            cfs_period_us?.trim().parse::<i64>().ok()?,
        ),
    };
    let (quota, period) = (u64::try_from(quota).ok()?, u64::try_from(period).ok()?);
    if quota == 0 || period == 0 {
        return None;
    }
    usize::try_from(quota.div_ceil(period)).ok()
}

/// The cgroup v2 path of this process from `/proc/self/cgroup`'s contents (its `0::PATH`
/// line), without the leading `/`.
fn cgroup_v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The quota of this process's cgroup, rounded up: v2 at its own cgroup's path (or the root of
/// a cgroup namespace, as in a container), else v1's cpu controller.
fn own_quota() -> Option<usize> {
    let root = Path::new("/sys/fs/cgroup");
    let own = read("/proc/self/cgroup")
        .as_deref()
        .and_then(cgroup_v2_path)
        .map(|p| root.join(p).join("cpu.max"));
    let v2 = own.and_then(read).or_else(|| read(root.join("cpu.max")));
    if v2.is_some() {
        return quota_cpus(v2.as_deref(), None, None);
    }
    for dir in ["cpu", "cpu,cpuacct"] {
        let quota = read(root.join(dir).join("cpu.cfs_quota_us"));
        let period = read(root.join(dir).join("cpu.cfs_period_us"));
        if quota.is_some() {
            return quota_cpus(None, quota.as_deref(), period.as_deref());
        }
    }
    None
}

/// The CPUs this process may run on (its affinity mask), at least 1.
fn allowed_cpus() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bit set sized as the call is told; CPU_COUNT only reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                let n = libc::CPU_COUNT(&set);
                if n > 0 {
                    return n as usize;
                }
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Render workers when the configuration sets none: the cgroup's CPU quota rounded up, at most
/// the CPUs allowed; else those CPUs.
pub fn default_workers() -> usize {
    let allowed = allowed_cpus();
    own_quota().map_or(allowed, |q| q.min(allowed)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_quotas_round_up() {
        assert_eq!(quota_cpus(Some("max 100000\n"), None, None), None);
        assert_eq!(quota_cpus(Some("150000 100000\n"), None, None), Some(2));
        assert_eq!(quota_cpus(Some("200000 100000"), None, None), Some(2));
        assert_eq!(quota_cpus(Some("100000 100000"), None, None), Some(1));
        assert_eq!(quota_cpus(Some("50000 100000"), None, None), Some(1));
        assert_eq!(quota_cpus(Some("6400000 100000"), None, None), Some(64));
        // A period left out is the kernel's default, 100 ms.
        assert_eq!(quota_cpus(Some("250000"), None, None), Some(3));
    }

    #[test]
    fn cgroup_v1_quotas_round_up_and_minus_one_is_none() {
        assert_eq!(quota_cpus(None, Some("-1\n"), Some("100000\n")), None);
        assert_eq!(
            quota_cpus(None, Some("150000\n"), Some("100000\n")),
            Some(2)
        );
        assert_eq!(quota_cpus(None, Some("400000"), Some("100000")), Some(4));
        assert_eq!(quota_cpus(None, Some("150000"), None), None);
        // v2 wins when both are there.
        assert_eq!(
            quota_cpus(Some("100000 100000"), Some("400000"), Some("100000")),
            Some(1)
        );
    }

    #[test]
    fn garbage_is_no_quota() {
        for v2 in [
            "",
            "\n",
            "lots 100000",
            "150000 often",
            "0 100000",
            "100000 0",
        ] {
            assert_eq!(quota_cpus(Some(v2), None, None), None, "{v2:?}");
        }
        assert_eq!(quota_cpus(Some("1 2 3"), None, None), None);
        assert_eq!(quota_cpus(Some("-5 100000"), None, None), None);
        assert_eq!(quota_cpus(None, Some("x"), Some("100000")), None);
        assert_eq!(quota_cpus(None, Some("100000"), Some("-3")), None);
        assert_eq!(quota_cpus(None, None, None), None);
    }

    #[test]
    fn workers_in_the_config_win_and_zero_is_refused() {
        let config = |workers: &str| {
            crate::config::Config::from_toml(&format!(
                "[limits]\n{workers}\n[storages.a]\ntype = \"local\"\nroot = \"/\""
            ))
        };
        assert_eq!(config("workers = 3").unwrap().limits.workers(), 3);
        assert_eq!(config("").unwrap().limits.workers, None);
        let err = config("workers = 0").unwrap_err().to_string();
        assert!(err.contains("limits.workers must be at least 1"), "{err}");
    }

    #[test]
    fn the_v2_path_is_the_zero_line() {
        assert_eq!(
            cgroup_v2_path("0::/kubepods/pod1/abc\n"),
            Some("kubepods/pod1/abc")
        );
        assert_eq!(cgroup_v2_path("0::/\n"), Some(""));
        assert_eq!(
            cgroup_v2_path("12:cpu,cpuacct:/docker/x\n0::/x\n"),
            Some("x")
        );
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
    }
}
