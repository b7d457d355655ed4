//! What the generator knows about processes: its own CPU time (getrusage),
//! a server's RSS and CPU time (/proc/PID), and its file descriptor limit.

use std::time::Duration;

use serde::Serialize;

/// CPU time (user + system) this process has used so far.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One look at another process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// CPU time (user + system) so far, seconds.
    pub cpu_s: f64,
}

/// Reads /proc/PID/status and /proc/PID/stat; None when the process is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After ')': state(3) ppid(4) ... utime(14) stime(15), 1-based as in proc(5).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (ticks(14)? + ticks(15)?) as f64 / hz;
    Some(ProcSample {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu_s,
    })
}

/// The sum over several processes (a cluster's nodes): RSS, peak RSS and CPU
/// time added up over those still alive; None when none is.
pub fn proc_sample_sum(pids: &[u32]) -> Option<ProcSample> {
    let mut total: Option<ProcSample> = None;
    for s in pids.iter().filter_map(|&pid| proc_sample(pid)) {
        let t = total.get_or_insert_with(ProcSample::default);
        t.rss_kib += s.rss_kib;
        t.hwm_kib += s.hwm_kib;
        t.cpu_s += s.cpu_s;
    }
    total
}

/// Raises the soft open-file limit to the hard one; answers the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        let me = proc_sample(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0);
        assert!(me.hwm_kib >= me.rss_kib);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > Duration::ZERO);
    }
}
