//! The batch-1 helper thread: its switch, and the CPUs it runs on. One test, in its own
//! process, because the switch is global.
#![cfg(target_os = "linux")]

use kiln::prelude::*;
use kiln::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper};
use std::time::Duration;

kiln::model! { pub struct Mlp { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) } }

/// The ids and allowed-CPU lists of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            found.push((
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                cpus_allowed(&dir.join("status")),
            ));
        }
    }
    found
}

fn cpus_allowed(status: &std::path::Path) -> String {
    std::fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn infer_batch_1(net: &mut Mlp<f32>, calls: usize) -> Vec<f32> {
    let x: Vec<f32> = (0..784).map(|i| (i % 17) as f32 / 17.0).collect();
    let mut out = Vec::new();
    for _ in 0..calls {
        out = net.infer(TensorRef::new(&x).unwrap()).to_vec();
    }
    out
}

#[test]
fn the_helper_can_be_switched_off_and_runs_on_the_process_cpus() {
    let process_cpus = cpus_allowed("/proc/self/status".as_ref());
    // rayon sizes its pool from the CPUs of the thread that first uses it: start it
    // here, as a program that trains or runs large batches before serving would.
    let rayon_threads = rayon::current_num_threads();
    let mut net = Mlp::<f32>::new(0);

    // Off from the start: batch-1 calls never start the helper.
    set_small_batch_helper(SmallBatchHelper::Off);
    assert_eq!(small_batch_helper(), SmallBatchHelper::Off);
    let alone = infer_batch_1(&mut net, 500);
    assert!(
        threads_named("kiln-pair").is_empty(),
        "a helper started while off"
    );

    // On, from a thread pinned to one CPU: the helper starts (given two threads and
    // two CPUs) and runs on the process's CPUs, not on the pinned thread's one.
    set_small_batch_helper(SmallBatchHelper::Spin(Duration::from_micros(200)));
    let paired = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a zeroed set is empty; CPU 0 is added; pid 0 is this thread.
                unsafe {
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut one);
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    assert_eq!(libc::sched_setaffinity(0, size, &one), 0);
                }
                infer_batch_1(&mut net, 500)
            })
            .join()
            .unwrap()
    });
    // Which rows the helper computes never changes a result.
    assert_eq!(alone, paired);
    let helpers = threads_named("kiln-pair");
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if rayon_threads >= 2 && two_cpus {
        assert_eq!(helpers.len(), 1, "{helpers:?}");
        assert_eq!(
            helpers[0].1, process_cpus,
            "the helper took its creator's CPUs"
        );
    } else {
        eprintln!("one CPU or one rayon thread here: no helper, by design");
        assert!(helpers.is_empty(), "{helpers:?}");
    }

    // Off again: calls run alone and give the same values.
    set_small_batch_helper(SmallBatchHelper::Off);
    assert_eq!(infer_batch_1(&mut net, 100), alone);
}
