//! The helper thread: its switch, the CPUs it runs on, and that the splits it takes
//! give the bits they give elsewhere. One test, in its own process, because the switch
//! is global.
#![cfg(target_os = "linux")]

use kiln::prelude::*;
use kiln::threads::{set_small_batch_helper, small_batch_helper, SmallBatchHelper};
use std::time::Duration;

kiln::model! { pub struct Mlp { input: [784], fc1: Dense(128), Relu, fc2: Dense(10) } }

kiln::model! {
    pub struct Cnn {
        input: [1, 16, 16],
        Conv2d(16, kernel = 3, padding = 1), BatchNorm2d, Relu,
        Flatten, Dense(10),
    }
}

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

    // Training steps whose layers and optimiser split in two: on one thread, on two
    // through the helper, on two through rayon's join (helper off), on three. Each
    // half computes the same values wherever it runs: the same bits every time.
    let trained = |threads: usize, helper: SmallBatchHelper| {
        set_small_batch_helper(helper);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train(5))
    };
    let spin = SmallBatchHelper::Spin(Duration::from_micros(200));
    let one = trained(1, spin);
    for (threads, helper) in [(2, spin), (2, SmallBatchHelper::Off), (3, spin)] {
        let other = trained(threads, helper);
        assert!(
            one.iter()
                .zip(&other)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads, {helper:?}: not the one-thread weights"
        );
    }
}

/// The parameters after `steps` SGD steps of the MLP and of the CNN at batch 256:
/// above the threading line in every layer, more than 65,536 parameters for the
/// optimiser's halves, and convolution and batch norm, whose sums over the batch are
/// taken in halves and added.
fn train(steps: usize) -> Vec<f32> {
    let batch = 256;
    let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let x: Vec<f32> = (0..batch * 784).map(|i| (i % 29) as f32 / 29.0).collect();
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let mut mlp = Mlp::<f32>::new(3);
    let mut sgd = Sgd::new(0.05);
    for _ in 0..steps {
        mlp.train_step(x, &y, &CrossEntropy::default(), &mut sgd)
            .unwrap();
    }
    let images: Vec<f32> = (0..batch * 256).map(|i| (i % 31) as f32 / 31.0).collect();
    let images = TensorRef::<f32, Shape3<1, 16, 16>>::new(&images).unwrap();
    let mut cnn = Cnn::<f32>::new(4);
    let mut sgd = Sgd::new(0.05);
    for _ in 0..steps {
        cnn.train_step(images, &y, &CrossEntropy::default(), &mut sgd)
            .unwrap();
    }
    let mut all = mlp.params().as_slice().to_vec();
    all.extend_from_slice(cnn.params().as_slice());
    all
}
