//! Placement (lifecycle.md §3.2–§3.3) as a pure function: given the pending jobs grouped into classes and the
//! workers with an open session, decide which job goes to which worker now and why the others wait. A pass costs
//! O(classes × workers + assignments × (workers + log classes)), plus the jobs that step aside for an exclusion:
//! it never walks the whole queue, and it counts the queue entries it visits so tests can prove it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::ops::Bound;

use time::OffsetDateTime;

use protocol::JobId;

/// Queue order: priority descending, then job id (creation order) ascending.
pub type QueueKey = (Reverse<i32>, JobId);

/// Jobs that can be placed by the same workers: same binary, same (sorted) path variables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    pub binary: String,
    pub paths: Vec<String>,
}

/// Why a pending job waits (lifecycle.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    NoWorkerOnline,
    NoWorkerWithBinary,
    NoWorkerWithPaths,
    AllWorkersDraining,
    RetryDelay,
    AllWorkersBusy,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::NoWorkerOnline => "no_worker_online",
            WaitReason::NoWorkerWithBinary => "no_worker_with_binary",
            WaitReason::NoWorkerWithPaths => "no_worker_with_paths",
            WaitReason::AllWorkersDraining => "all_workers_draining",
            WaitReason::RetryDelay => "retry_delay",
            WaitReason::AllWorkersBusy => "all_workers_busy",
        }
    }

    /// Whether the wait counts toward `janitor.job_pending_timeout` (no worker could ever take the job).
    pub fn counts_toward_timeout(self) -> bool {
        matches!(
            self,
            WaitReason::NoWorkerOnline
                | WaitReason::NoWorkerWithBinary
                | WaitReason::NoWorkerWithPaths
                | WaitReason::AllWorkersDraining
        )
    }
}

/// A wait reason with the sentence that names what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitInfo {
    pub reason: WaitReason,
    pub detail: String,
}

/// A worker with an open session, as placement sees it.
#[derive(Debug, Clone)]
pub struct WorkerSlots<'a> {
    pub id: &'a str,
    /// `false` while draining: fits, but takes nothing new.
    pub online: bool,
    /// Sorted.
    pub binaries: &'a [String],
    /// Sorted.
    pub paths: &'a [String],
    pub used: u32,
    pub max: u32,
    pub last_assigned_at: Option<OffsetDateTime>,
}

/// One class of pending jobs in queue order.
#[derive(Debug, Clone, Copy)]
pub struct ClassQueue<'a> {
    pub key: &'a ClassKey,
    pub jobs: &'a BTreeSet<QueueKey>,
}

/// What placement needs to know about individual jobs.
pub trait JobFacts {
    /// The worker refused or timed out this job recently (lifecycle.md J7, J8).
    fn excluded(&self, job: JobId, worker: &str) -> bool;
    /// The worker of the job's previous attempt.
    fn previous_worker(&self, job: JobId) -> Option<&str>;
}

/// One decision: `job` goes to `workers[worker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub job: JobId,
    pub worker: usize,
}

/// The outcome of one pass.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    /// Per class (same index as the input), the wait of the jobs left in it.
    pub class_waits: Vec<WaitInfo>,
    /// Jobs that stepped aside because every fitting worker with a free slot is excluded for them.
    pub retry_waits: Vec<(JobId, WaitInfo)>,
    /// Queue entries looked at.
    pub visits: usize,
}

fn contains_all(have: &[String], need: &[String]) -> bool {
    need.iter().all(|name| have.binary_search(name).is_ok())
}

fn class_wait(key: &ClassKey, workers: &[WorkerSlots<'_>], fitting: &[usize]) -> WaitInfo {
    if workers.is_empty() {
        return WaitInfo {
            reason: WaitReason::NoWorkerOnline,
            detail: "no worker is connected".to_owned(),
        };
    }
    let with_binary: Vec<&WorkerSlots<'_>> = workers
        .iter()
        .filter(|worker| worker.binaries.binary_search(&key.binary).is_ok())
        .collect();
    if with_binary.is_empty() {
        return WaitInfo {
            reason: WaitReason::NoWorkerWithBinary,
            detail: format!("no online worker has binary {}", key.binary),
        };
    }
    if fitting.is_empty() {
        let missing: Vec<&str> = key
            .paths
            .iter()
            .filter(|name| {
                !with_binary
                    .iter()
                    .any(|worker| worker.paths.binary_search(name).is_ok())
            })
            .map(String::as_str)
            .collect();
        let detail = if missing.is_empty() {
            format!(
                "no online worker has all of path variable(s): {}",
                key.paths.join(", ")
            )
        } else {
            format!(
                "no online worker has path variable(s): {}",
                missing.join(", ")
            )
        };
        return WaitInfo {
            reason: WaitReason::NoWorkerWithPaths,
            detail,
        };
    }
    if fitting.iter().all(|&idx| !workers[idx].online) {
        let names: Vec<&str> = fitting.iter().map(|&idx| workers[idx].id).collect();
        return WaitInfo {
            reason: WaitReason::AllWorkersDraining,
            detail: format!("every fitting worker is draining: {}", names.join(", ")),
        };
    }
    WaitInfo {
        reason: WaitReason::AllWorkersBusy,
        detail: "every slot of the fitting workers is taken".to_owned(),
    }
}

/// When a worker last got a job: never, at a time before this pass, or as the n-th assignment of this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Recency {
    Never,
    At(OffsetDateTime),
    ThisPass(usize),
}

/// Least loaded first: smallest `used/max`, then fewest used, then longest idle, then worker id.
fn better(a: (&WorkerSlots<'_>, u32, Recency), b: (&WorkerSlots<'_>, u32, Recency)) -> Ordering {
    let load_a = u64::from(a.1) * u64::from(b.0.max.max(1));
    let load_b = u64::from(b.1) * u64::from(a.0.max.max(1));
    load_a
        .cmp(&load_b)
        .then(a.1.cmp(&b.1))
        .then(a.2.cmp(&b.2))
        .then(a.0.id.cmp(b.0.id))
}

/// Plans one placement pass.
pub fn plan(
    classes: &[ClassQueue<'_>],
    workers: &[WorkerSlots<'_>],
    facts: &impl JobFacts,
) -> Plan {
    let mut free: Vec<u32> = workers
        .iter()
        .map(|worker| worker.max.saturating_sub(worker.used))
        .collect();
    let mut used: Vec<u32> = workers.iter().map(|worker| worker.used).collect();
    let mut recency: Vec<Recency> = workers
        .iter()
        .map(|worker| worker.last_assigned_at.map_or(Recency::Never, Recency::At))
        .collect();
    let mut out = Plan::default();
    // Workers with an open session that fit each class (online or draining), and the online ones among them.
    let mut fit_online: Vec<Vec<usize>> = Vec::with_capacity(classes.len());
    for class in classes {
        let fitting: Vec<usize> = (0..workers.len())
            .filter(|&idx| {
                let worker = &workers[idx];
                worker.binaries.binary_search(&class.key.binary).is_ok()
                    && contains_all(worker.paths, &class.key.paths)
            })
            .collect();
        out.class_waits
            .push(class_wait(class.key, workers, &fitting));
        fit_online.push(
            fitting
                .into_iter()
                .filter(|&idx| workers[idx].online)
                .collect(),
        );
    }
    let has_free = |fit: &[usize], free: &[u32]| fit.iter().any(|&idx| free[idx] > 0);
    let mut heap: BinaryHeap<Reverse<(QueueKey, usize)>> = BinaryHeap::new();
    for (idx, class) in classes.iter().enumerate() {
        if let Some(head) = class.jobs.first()
            && has_free(&fit_online[idx], &free)
        {
            heap.push(Reverse((*head, idx)));
        }
    }
    while let Some(Reverse((key, class_idx))) = heap.pop() {
        let candidates: Vec<usize> = fit_online[class_idx]
            .iter()
            .copied()
            .filter(|&idx| free[idx] > 0)
            .collect();
        if candidates.is_empty() {
            continue; // every fitting slot went to jobs ahead of this class's head in this pass
        }
        out.visits += 1;
        let job = key.1;
        let mut allowed: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&idx| !facts.excluded(job, workers[idx].id))
            .collect();
        let next = classes[class_idx]
            .jobs
            .range((Bound::Excluded(key), Bound::Unbounded))
            .next()
            .copied();
        if allowed.is_empty() {
            out.retry_waits.push((
                job,
                WaitInfo {
                    reason: WaitReason::RetryDelay,
                    detail: "the fitting workers with a free slot refused this job or did not accept it in time; \
                             it is offered to them again after janitor.job_pending_retry_delay"
                        .to_owned(),
                },
            ));
            if let Some(next) = next {
                heap.push(Reverse((next, class_idx)));
            }
            continue;
        }
        if let Some(previous) = facts.previous_worker(job)
            && allowed.len() > 1
        {
            allowed.retain(|&idx| workers[idx].id != previous);
        }
        let Some(chosen) = allowed.into_iter().min_by(|&a, &b| {
            better(
                (&workers[a], used[a], recency[a]),
                (&workers[b], used[b], recency[b]),
            )
        }) else {
            continue;
        };
        free[chosen] -= 1;
        used[chosen] += 1;
        recency[chosen] = Recency::ThisPass(out.assignments.len());
        out.assignments.push(Assignment {
            job,
            worker: chosen,
        });
        if let Some(next) = next
            && has_free(&fit_online[class_idx], &free)
        {
            heap.push(Reverse((next, class_idx)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::Ulid;
    use std::collections::{HashMap, HashSet};

    struct Facts {
        excluded: HashSet<(JobId, String)>,
        previous: HashMap<JobId, String>,
    }

    impl JobFacts for Facts {
        fn excluded(&self, job: JobId, worker: &str) -> bool {
            self.excluded.contains(&(job, worker.to_owned()))
        }
        fn previous_worker(&self, job: JobId) -> Option<&str> {
            self.previous.get(&job).map(String::as_str)
        }
    }

    fn no_facts() -> Facts {
        Facts {
            excluded: HashSet::new(),
            previous: HashMap::new(),
        }
    }

    fn id(n: u128) -> JobId {
        JobId(Ulid::from_u128(n))
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn no_worker_online_is_the_wait_of_every_class() {
        let key = ClassKey {
            binary: "ffmpeg".into(),
            paths: strings(&["Media"]),
        };
        let jobs: BTreeSet<QueueKey> = [(Reverse(0), id(1))].into();
        let plan = plan(
            &[ClassQueue {
                key: &key,
                jobs: &jobs,
            }],
            &[],
            &no_facts(),
        );
        assert!(plan.assignments.is_empty());
        assert_eq!(plan.class_waits[0].reason, WaitReason::NoWorkerOnline);
        assert_eq!(plan.visits, 0);
    }

    #[test]
    fn wait_reasons_name_what_is_missing() {
        let binaries = strings(&["ffmpeg"]);
        let paths = strings(&["Media"]);
        let worker = WorkerSlots {
            id: "w1",
            online: true,
            binaries: &binaries,
            paths: &paths,
            used: 0,
            max: 1,
            last_assigned_at: None,
        };
        let jobs: BTreeSet<QueueKey> = [(Reverse(0), id(1))].into();
        let probe = ClassKey {
            binary: "ffprobe".into(),
            paths: vec![],
        };
        let other = ClassKey {
            binary: "ffmpeg".into(),
            paths: strings(&["Media", "Other"]),
        };
        let result = plan(
            &[
                ClassQueue {
                    key: &probe,
                    jobs: &jobs,
                },
                ClassQueue {
                    key: &other,
                    jobs: &jobs,
                },
            ],
            std::slice::from_ref(&worker),
            &no_facts(),
        );
        assert_eq!(result.class_waits[0].reason, WaitReason::NoWorkerWithBinary);
        assert_eq!(result.class_waits[1].reason, WaitReason::NoWorkerWithPaths);
        assert_eq!(
            result.class_waits[1].detail,
            "no online worker has path variable(s): Other"
        );
        let draining = WorkerSlots {
            online: false,
            ..worker.clone()
        };
        let media = ClassKey {
            binary: "ffmpeg".into(),
            paths: strings(&["Media"]),
        };
        let result = plan(
            &[ClassQueue {
                key: &media,
                jobs: &jobs,
            }],
            &[draining],
            &no_facts(),
        );
        assert_eq!(result.class_waits[0].reason, WaitReason::AllWorkersDraining);
        assert!(result.assignments.is_empty());
    }

    #[test]
    fn priority_then_age_across_classes_and_least_loaded_worker() {
        let binaries = strings(&["ffmpeg", "ffprobe"]);
        let paths = strings(&["Media"]);
        let workers = [
            WorkerSlots {
                id: "busy",
                online: true,
                binaries: &binaries,
                paths: &paths,
                used: 1,
                max: 2,
                last_assigned_at: None,
            },
            WorkerSlots {
                id: "idle",
                online: true,
                binaries: &binaries,
                paths: &paths,
                used: 0,
                max: 2,
                last_assigned_at: None,
            },
        ];
        let a = ClassKey {
            binary: "ffmpeg".into(),
            paths: strings(&["Media"]),
        };
        let b = ClassKey {
            binary: "ffprobe".into(),
            paths: vec![],
        };
        let a_jobs: BTreeSet<QueueKey> = [(Reverse(0), id(1)), (Reverse(0), id(4))].into();
        let b_jobs: BTreeSet<QueueKey> = [(Reverse(5), id(3)), (Reverse(0), id(2))].into();
        let plan = plan(
            &[
                ClassQueue {
                    key: &a,
                    jobs: &a_jobs,
                },
                ClassQueue {
                    key: &b,
                    jobs: &b_jobs,
                },
            ],
            &workers,
            &no_facts(),
        );
        let order: Vec<(JobId, &str)> = plan
            .assignments
            .iter()
            .map(|x| (x.job, workers[x.worker].id))
            .collect();
        // 3 to the idle worker (0/2); then both are at 1/2 with one slot used, and "busy" has been idle longer.
        assert_eq!(
            order,
            vec![(id(3), "idle"), (id(1), "busy"), (id(2), "idle")]
        );
        assert_eq!(plan.class_waits[0].reason, WaitReason::AllWorkersBusy);
    }

    #[test]
    fn an_excluded_head_steps_aside_and_the_previous_worker_is_avoided() {
        let binaries = strings(&["ffmpeg"]);
        let workers = [
            WorkerSlots {
                id: "w1",
                online: true,
                binaries: &binaries,
                paths: &[],
                used: 0,
                max: 1,
                last_assigned_at: None,
            },
            WorkerSlots {
                id: "w2",
                online: true,
                binaries: &binaries,
                paths: &[],
                used: 0,
                max: 1,
                last_assigned_at: None,
            },
        ];
        let key = ClassKey {
            binary: "ffmpeg".into(),
            paths: vec![],
        };
        let jobs: BTreeSet<QueueKey> = [
            (Reverse(0), id(1)),
            (Reverse(0), id(2)),
            (Reverse(0), id(3)),
        ]
        .into();
        let mut facts = no_facts();
        facts.excluded.insert((id(1), "w1".into()));
        facts.excluded.insert((id(1), "w2".into()));
        facts.previous.insert(id(2), "w1".into());
        let plan = plan(
            &[ClassQueue {
                key: &key,
                jobs: &jobs,
            }],
            &workers,
            &facts,
        );
        let order: Vec<(JobId, &str)> = plan
            .assignments
            .iter()
            .map(|x| (x.job, workers[x.worker].id))
            .collect();
        assert_eq!(order, vec![(id(2), "w2"), (id(3), "w1")]);
        assert_eq!(plan.retry_waits.len(), 1);
        assert_eq!(plan.retry_waits[0].0, id(1));
    }

    #[test]
    fn a_pass_over_100000_pending_jobs_visits_o_of_classes() {
        let binaries = strings(&["ffmpeg", "ffprobe"]);
        let paths = strings(&["A", "B", "C"]);
        let keys: Vec<ClassKey> = (0..4)
            .map(|n| ClassKey {
                binary: if n % 2 == 0 { "ffmpeg" } else { "ffprobe" }.into(),
                paths: vec![["A", "B"][n / 2].into()],
            })
            .collect();
        let queues: Vec<BTreeSet<QueueKey>> = (0..4u128)
            .map(|c| {
                (0..25_000u128)
                    .map(|n| (Reverse(0), id(n * 4 + c)))
                    .collect()
            })
            .collect();
        let classes: Vec<ClassQueue<'_>> = keys
            .iter()
            .zip(&queues)
            .map(|(key, jobs)| ClassQueue { key, jobs })
            .collect();
        let workers = [
            WorkerSlots {
                id: "w1",
                online: true,
                binaries: &binaries,
                paths: &paths,
                used: 0,
                max: 2,
                last_assigned_at: None,
            },
            WorkerSlots {
                id: "w2",
                online: true,
                binaries: &binaries,
                paths: &paths,
                used: 0,
                max: 1,
                last_assigned_at: None,
            },
        ];
        let plan = plan(&classes, &workers, &no_facts());
        assert_eq!(plan.assignments.len(), 3, "three free slots");
        assert!(
            plan.visits <= classes.len() + plan.assignments.len(),
            "visited {} entries",
            plan.visits
        );
        // A full farm: no visits at all, whatever the queue length.
        let full = [
            WorkerSlots {
                used: 2,
                ..workers[0].clone()
            },
            WorkerSlots {
                used: 1,
                ..workers[1].clone()
            },
        ];
        assert_eq!(self::plan(&classes, &full, &no_facts()).visits, 0);
    }

    type World = (
        Vec<(u8, u8, i8)>,
        Vec<(u8, u8, u8, bool, u8)>,
        Vec<(u8, u8)>,
    );

    fn arb_world() -> impl Strategy<Value = World> {
        (
            // jobs: (binary 0..2, paths mask 0..4, priority)
            prop::collection::vec((0u8..2, 0u8..4, -2i8..3), 0..40),
            // workers: (binaries mask 1..4, paths mask 0..4, max 1..4, online, used)
            prop::collection::vec((1u8..4, 0u8..4, 1u8..4, any::<bool>(), 0u8..4), 0..5),
            // exclusions: (job index, worker index)
            prop::collection::vec((0u8..40, 0u8..5), 0..10),
        )
    }

    proptest! {
        #[test]
        fn plans_respect_slots_fit_exclusions_and_queue_order((jobs, workers, exclusions) in arb_world()) {
            let binary_names = ["ffmpeg", "ffprobe"];
            let path_names = ["A", "B"];
            let mask = |m: u8, names: &[&str]| -> Vec<String> {
                names.iter().enumerate().filter(|(i, _)| m & (1 << i) != 0).map(|(_, n)| (*n).to_owned()).collect()
            };
            let worker_bins: Vec<Vec<String>> = workers.iter().map(|w| mask(w.0, &binary_names)).collect();
            let worker_paths: Vec<Vec<String>> = workers.iter().map(|w| mask(w.1, &path_names)).collect();
            let worker_ids: Vec<String> = (0..workers.len()).map(|i| format!("w{i}")).collect();
            let slots: Vec<WorkerSlots<'_>> = workers.iter().enumerate().map(|(i, w)| WorkerSlots {
                id: &worker_ids[i], online: w.3, binaries: &worker_bins[i], paths: &worker_paths[i],
                used: u32::from(w.4.min(w.2)), max: u32::from(w.2), last_assigned_at: None,
            }).collect();
            let mut classes_map: std::collections::BTreeMap<ClassKey, BTreeSet<QueueKey>> = Default::default();
            let mut job_class = HashMap::new();
            for (n, job) in jobs.iter().enumerate() {
                let key = ClassKey { binary: binary_names[job.0 as usize].into(), paths: mask(job.1, &path_names) };
                classes_map.entry(key.clone()).or_default().insert((Reverse(i32::from(job.2)), id(n as u128 + 1)));
                job_class.insert(id(n as u128 + 1), (key, i32::from(job.2)));
            }
            let mut facts = no_facts();
            for (j, w) in &exclusions {
                if (*j as usize) < jobs.len() && (*w as usize) < workers.len() {
                    facts.excluded.insert((id(*j as u128 + 1), worker_ids[*w as usize].clone()));
                }
            }
            let classes: Vec<ClassQueue<'_>> = classes_map.iter().map(|(key, jobs)| ClassQueue { key, jobs }).collect();
            let result = plan(&classes, &slots, &facts);
            let mut per_worker = vec![0u32; slots.len()];
            let mut assigned = HashSet::new();
            for a in &result.assignments {
                let worker = &slots[a.worker];
                let (key, _) = &job_class[&a.job];
                prop_assert!(worker.online);
                prop_assert!(worker.binaries.contains(&key.binary));
                prop_assert!(key.paths.iter().all(|p| worker.paths.contains(p)));
                prop_assert!(!facts.excluded(a.job, worker.id));
                prop_assert!(assigned.insert(a.job), "assigned twice");
                per_worker[a.worker] += 1;
            }
            for (idx, worker) in slots.iter().enumerate() {
                prop_assert!(worker.used + per_worker[idx] <= worker.max);
            }
            // Within a class, a job is passed over only if it stepped aside (all fitting free workers excluded).
            let stepped: HashSet<JobId> = result.retry_waits.iter().map(|(job, _)| *job).collect();
            for class in &classes {
                let mut seen_unassigned_blocker = false;
                for (_, job) in class.jobs.iter() {
                    if assigned.contains(job) {
                        prop_assert!(!seen_unassigned_blocker, "a job was placed past an unplaced, non-excluded one");
                    } else if !stepped.contains(job) {
                        seen_unassigned_blocker = true;
                    }
                }
            }
            prop_assert!(result.visits <= classes.len() + result.assignments.len() + result.retry_waits.len());
            // Deterministic.
            let again = plan(&classes, &slots, &facts);
            prop_assert_eq!(again.assignments, result.assignments);
        }
    }
}
