//! The conversions between the runtime's types and the engine's: the container the engine
//! creates for a [`ContainerConfig`], and the [`ContainerStatus`] and [`Usage`] read back from
//! what the engine reports.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCpuStats, ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse,
    HealthConfig, HostConfig, HostConfigLogConfig, Network, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use super::logs::parse_time;
use crate::runtime::{ContainerConfig, ContainerStatus, Usage};

/// Log rotation of every container, as the kubelet's defaults (10 MiB × 5 files): a chatty
/// workload must not fill the host's disk.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "5";

/// The security options of every container: no process gains privileges through setuid or
/// file capabilities. Seccomp is deliberately absent: the engine's default profile applies
/// (the runtime checks that the engine has one), and `seccomp=unconfined` is never asked for.
/// Engines before 23.0 have no name for the default profile, so it cannot be stated here.
pub(super) const SECURITY_OPTIONS: &[&str] = &["no-new-privileges"];

/// The driver options of the network the runtime makes for containers: a bridge on which they
/// cannot open connections to one another (only to the outside, and to the host).
pub(super) const ISOLATED_NETWORK_OPTIONS: &[(&str, &str)] = &[(ICC_OPTION, "false")];

const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The engine's container for `config`, attached to `network` (a name or id): the trait's
/// settings, plus the hardening every Stratus container gets.
pub(super) fn container_body(config: &ContainerConfig, network: &str) -> ContainerCreateBody {
    let positive = |n: i64| (n > 0).then_some(n);
    let not_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let port = (config.port > 0).then(|| format!("{}/tcp", config.port));
    let port_bindings = port.clone().map(|port| {
        // HostPort "": the engine picks a free port; `inspect` reports it.
        let binding = PortBinding { host_ip: Some(config.host_ip.clone()), host_port: Some(String::new()) };
        HashMap::from([(port, Some(vec![binding]))])
    });
    let mut tmpfs_options = "rw,nosuid,nodev".to_owned();
    if config.tmp_size_bytes > 0 {
        tmpfs_options.push_str(&format!(",size={}", config.tmp_size_bytes));
    }
    let host_config = HostConfig {
        nano_cpus: positive(config.nano_cpus),
        memory: positive(config.memory_bytes),
        // Equal to the memory limit: no swap beyond it, so the limit is what the workload gets
        // and an overrun is an OOM kill rather than a slow death in swap.
        memory_swap: positive(config.memory_bytes),
        pids_limit: positive(config.pids_limit),
        security_opt: Some(SECURITY_OPTIONS.iter().map(|o| (*o).to_owned()).collect()),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(config.cap_add.clone()),
        privileged: Some(false),
        readonly_rootfs: Some(config.read_only_root_fs),
        tmpfs: Some(HashMap::from([("/tmp".to_owned(), tmpfs_options)])),
        port_bindings,
        // Own network, IPC, PID and UTS namespaces, stated rather than left to the daemon's
        // configurable defaults.
        network_mode: Some(network.to_owned()),
        ipc_mode: Some("private".to_owned()),
        pid_mode: Some(String::new()),
        uts_mode: Some(String::new()),
        // The agent restarts crashed containers itself, with backoff, and reports each restart.
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        auto_remove: Some(false),
        // json-file whatever the daemon's default: `logs` must be able to read it back.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILES.to_owned()),
            ])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        // An empty command keeps the image's entrypoint and empty args its cmd. A command
        // without args runs without the image's cmd, as in Kubernetes: the engine only falls
        // back to the image's cmd when the entrypoint is not overridden.
        entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
        cmd: (!config.args.is_empty()).then(|| config.args.clone()),
        working_dir: not_empty(&config.working_dir),
        user: not_empty(&config.user),
        env: Some(config.env.iter().map(|(name, value)| format!("{name}={value}")).collect()),
        labels: Some(config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        exposed_ports: port.map(|port| vec![port]),
        // Stdin closed (reads see EOF at once), no TTY: output goes to the logs, demultiplexed.
        open_stdin: Some(false),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        tty: Some(false),
        // The agent probes the container itself; an image's HEALTHCHECK would only cost CPU.
        healthcheck: Some(HealthConfig { test: Some(vec!["NONE".to_owned()]), ..Default::default() }),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Why a network would let containers reach one another, or `None` if it would not.
pub(super) fn network_problem(network: &Network) -> Option<String> {
    let driver = network.driver.as_deref().unwrap_or_default();
    if driver != "bridge" {
        return Some(format!("has the driver {driver:?}, not bridge"));
    }
    let icc = network.options.as_ref().and_then(|options| options.get(ICC_OPTION)).map(String::as_str);
    match icc {
        Some("false") => None,
        _ => Some(format!("lets its containers reach one another ({ICC_OPTION} is not false)")),
    }
}

/// Why an engine with these `SecurityOptions` (`docker info`) would run a container without a
/// seccomp profile, or `None` if it applies one: `name=seccomp,profile=default` (or `builtin`,
/// or the path of the operator's own profile) is what it should say.
pub(super) fn seccomp_problem(security_options: &[String]) -> Option<String> {
    let seccomp = security_options.iter().find_map(|option| {
        let fields: HashMap<&str, &str> = option.split(',').filter_map(|field| field.split_once('=')).collect();
        (fields.get("name") == Some(&"seccomp")).then(|| fields.get("profile").copied().unwrap_or_default())
    });
    match seccomp {
        None => Some("the engine does not support seccomp (see `docker info`, Security Options)".to_owned()),
        Some("unconfined") => {
            Some("the engine's default seccomp profile is unconfined (dockerd --seccomp-profile)".to_owned())
        }
        Some(_) => None,
    }
}

pub(super) fn container_status(inspect: ContainerInspectResponse) -> ContainerStatus {
    let state = inspect.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let finished_at = state.finished_at.as_deref().and_then(parse_time);
    let code = state.exit_code.unwrap_or(0);
    // A created container reports exit code 0 without having run; one whose start failed keeps
    // the status "created" but gets the failure's code (126, 127…).
    let exit_code = match state.status {
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => Some(code),
        _ if !running && (finished_at.is_some() || code != 0) => Some(code),
        _ => None,
    };
    // The container's address on the (one) network it joined.
    let ip = inspect
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref())
        .into_iter()
        .flat_map(|networks| networks.values())
        .find_map(|network| network.ip_address.as_deref().and_then(|ip| ip.parse().ok()));
    // The first published host port, whichever container port it is for: Stratus publishes one.
    let host_port = inspect
        .network_settings
        .and_then(|settings| settings.ports)
        .into_iter()
        .flatten()
        .filter_map(|(_, bindings)| bindings)
        .flatten()
        .find_map(|binding| binding.host_port.and_then(|port| port.parse::<u16>().ok()).filter(|port| *port > 0));
    ContainerStatus {
        id: inspect.id.unwrap_or_default(),
        name: inspect.name.map(|name| name.trim_start_matches('/').to_owned()).unwrap_or_default(),
        labels: inspect.config.and_then(|config| config.labels).unwrap_or_default().into_iter().collect(),
        running,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: state.started_at.as_deref().and_then(parse_time),
        finished_at,
        host_port: if running { host_port } else { None },
        ip: if running { ip } else { None },
        error: state.error.unwrap_or_default(),
    }
}

/// CPU (over the engine's two samples) and memory (the working set, as the kubelet counts it).
pub(super) fn usage(stats: &ContainerStatsResponse) -> Usage {
    let total = |cpu: Option<&ContainerCpuStats>| {
        let container = cpu.and_then(|cpu| cpu.cpu_usage.as_ref()).and_then(|usage| usage.total_usage);
        (container.unwrap_or(0), cpu.and_then(|cpu| cpu.system_cpu_usage).unwrap_or(0))
    };
    let (cpu_now, system_now) = total(stats.cpu_stats.as_ref());
    let (cpu_before, system_before) = total(stats.precpu_stats.as_ref());
    let cpu_delta = cpu_now.saturating_sub(cpu_before);
    let system_delta = system_now.saturating_sub(system_before);
    let online_cpus = stats
        .cpu_stats
        .as_ref()
        .and_then(|cpu| {
            cpu.online_cpus.filter(|n| *n > 0).map(u64::from).or_else(|| {
                cpu.cpu_usage.as_ref().and_then(|usage| usage.percpu_usage.as_ref()).map(|per| per.len() as u64)
            })
        })
        .filter(|n| *n > 0)
        .unwrap_or(1);
    // The system counter covers every CPU, so the share of it times the CPU count is the number
    // of CPUs the container kept busy.
    let cpu_millis = if system_delta > 0 {
        (cpu_delta as f64 / system_delta as f64 * online_cpus as f64 * 1000.0).round() as i64
    } else {
        0
    };
    // Page cache that can be dropped under pressure is not counted (`inactive_file`, as the
    // kubelet's working set and `docker stats` do); all of `cache` is not subtracted, as it
    // includes the tmpfs at /tmp, which does count against the limit and toward an OOM kill.
    let memory = stats.memory_stats.as_ref();
    let used = memory.and_then(|memory| memory.usage).unwrap_or(0);
    let inactive_file = memory
        .and_then(|memory| memory.stats.as_ref())
        .and_then(|stats| stats.get("total_inactive_file").or_else(|| stats.get("inactive_file")).copied())
        .unwrap_or(0);
    let memory_bytes = i64::try_from(used.saturating_sub(inactive_file)).unwrap_or(i64::MAX);
    Usage { cpu_millis, memory_bytes }
}

/// Docker's stop timeout is whole seconds; a partial second is rounded up so that the
/// workload gets at least the grace it was promised.
pub(super) fn stop_timeout_seconds(grace: Duration) -> i32 {
    let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use bollard::models::{ContainerCpuUsage, ContainerMemoryStats};

    use super::*;

    #[test]
    fn stop_timeouts_round_up_to_whole_seconds() {
        assert_eq!(stop_timeout_seconds(Duration::ZERO), 0);
        assert_eq!(stop_timeout_seconds(Duration::from_millis(1)), 1);
        assert_eq!(stop_timeout_seconds(Duration::from_secs(10)), 10);
        assert_eq!(stop_timeout_seconds(Duration::from_millis(10_001)), 11);
        assert_eq!(stop_timeout_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    fn cpu(total: u64, system: u64, online: Option<u32>, per_cpu: usize) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                percpu_usage: Some(vec![0; per_cpu]),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: online,
            ..Default::default()
        }
    }

    fn memory(usage: u64, stats: &[(&str, u64)]) -> ContainerMemoryStats {
        ContainerMemoryStats {
            usage: Some(usage),
            stats: Some(stats.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn usage_is_the_cpu_share_times_the_cpus_and_the_working_set() {
        // Half of one CPU on a 4-CPU host: 0.5/4 of the system's time.
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500_000_000, 20_000_000_000, Some(4), 4)),
            precpu_stats: Some(cpu(1_000_000_000, 16_000_000_000, Some(4), 4)),
            memory_stats: Some(memory(100 << 20, &[("cache", 30 << 20), ("total_inactive_file", 20 << 20)])),
            ..Default::default()
        };
        assert_eq!(usage(&stats), Usage { cpu_millis: 500, memory_bytes: 80 << 20 });
        // cgroup v2 names it inactive_file; without online_cpus the per-CPU list counts.
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(3_000, 4_000, None, 2)),
            precpu_stats: Some(cpu(1_000, 0, None, 2)),
            memory_stats: Some(memory(10 << 20, &[("inactive_file", 4 << 20)])),
            ..Default::default()
        };
        assert_eq!(usage(&stats), Usage { cpu_millis: 1000, memory_bytes: 6 << 20 });
    }

    #[test]
    fn usage_of_a_stopped_container_is_zero() {
        assert_eq!(usage(&ContainerStatsResponse::default()), Usage::default());
    }

    #[test]
    fn the_container_body_carries_limits_hardening_and_overrides() {
        let config = ContainerConfig {
            name: "n".into(),
            image: "img:v1".into(),
            command: vec!["/bin/app".into()],
            args: vec![],
            working_dir: "/work".into(),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            labels: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            port: 8080,
            host_ip: "127.0.0.1".into(),
            network: "stratus-instances".into(),
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids_limit: 100,
            cap_add: vec!["NET_BIND_SERVICE".into()],
            user: "1000:1000".into(),
            read_only_root_fs: true,
            tmp_size_bytes: 1 << 20,
        };
        let body = container_body(&config, "net-id");
        assert_eq!(body.entrypoint, Some(vec!["/bin/app".to_owned()]));
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, Some(vec!["A=1".to_owned(), "B=x=y".to_owned()]));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
        assert_eq!(body.open_stdin, Some(false));
        let host = body.host_config.unwrap();
        assert_eq!(
            (host.nano_cpus, host.memory, host.memory_swap, host.pids_limit),
            (Some(500_000_000), Some(64 << 20), Some(64 << 20), Some(100))
        );
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        assert_eq!((host.privileged, host.readonly_rootfs), (Some(false), Some(true)));
        // No new privileges; seccomp left to the engine's default profile, never unconfined.
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(host.network_mode.as_deref(), Some("net-id"));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], "rw,nosuid,nodev,size=1048576");
        let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!((binding.host_ip.as_deref(), binding.host_port.as_deref()), (Some("127.0.0.1"), Some("")));

        // No limits: nothing is sent, so the engine's defaults apply; no port: nothing published.
        let body = container_body(
            &ContainerConfig { image: "img".into(), args: vec!["serve".into()], ..Default::default() },
            "bridge",
        );
        assert_eq!((body.entrypoint, body.cmd), (None, Some(vec!["serve".to_owned()])));
        let host = body.host_config.unwrap();
        assert_eq!((host.nano_cpus, host.memory, host.memory_swap, host.pids_limit), (None, None, None, None));
        assert_eq!((host.port_bindings, body.exposed_ports), (None, None));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], "rw,nosuid,nodev");
    }

    #[test]
    fn only_an_engine_that_applies_a_seccomp_profile_will_do() {
        let options = |list: &[&str]| list.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>();
        for fine in [
            &["name=seccomp,profile=default"][..],
            &["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"],
            &["name=seccomp,profile=/etc/docker/seccomp.json"],
        ] {
            assert_eq!(seccomp_problem(&options(fine)), None, "{fine:?}");
        }
        let unconfined = seccomp_problem(&options(&["name=seccomp,profile=unconfined"])).unwrap();
        assert!(unconfined.contains("unconfined"), "{unconfined}");
        let missing = seccomp_problem(&options(&["name=apparmor"])).unwrap();
        assert!(missing.contains("does not support seccomp"), "{missing}");
        assert!(seccomp_problem(&[]).is_some());
    }

    #[test]
    fn only_a_bridge_without_inter_container_traffic_is_isolated() {
        let network = |driver: &str, options: &[(&str, &str)]| Network {
            driver: Some(driver.to_owned()),
            options: Some(options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        };
        assert_eq!(network_problem(&network("bridge", ISOLATED_NETWORK_OPTIONS)), None);
        let open = network_problem(&network("bridge", &[])).unwrap();
        assert!(open.contains("enable_icc is not false"), "{open}");
        assert!(network_problem(&network("bridge", &[(ICC_OPTION, "true")])).is_some());
        assert!(network_problem(&network("macvlan", ISOLATED_NETWORK_OPTIONS)).unwrap().contains("macvlan"));
    }
}
