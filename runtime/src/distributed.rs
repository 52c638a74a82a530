//! Data-parallel training across processes: every process (a *rank*) holds the whole
//! model, trains on its part of each global batch, and one all-reduce sums the
//! gradients before every update, so that every rank takes the same step.
//!
//! [`Communicator`] is the handful of collectives this needs (rank, size, all-reduce
//! sum, broadcast, barrier, abort). [`SingleProcess`] is the one-process implementation
//! and the default; with the `mpi` feature, `Mpi` runs on an MPI library (Open MPI,
//! MPICH) through the `mpi` crate. [`FitConfig::communicator`](crate::train::FitConfig::communicator)
//! hands one to [`fit`](crate::train::fit); the same program then runs alone or as
//! many ranks under `mpirun`.
//!
//! # What a data-parallel `fit` does
//!
//! - **Start.** The ranks check that they agree on everything that decides the number
//!   and content of the steps (the model's parameter table and training settings, the
//!   optimiser's learning rate, the element type, the batch size, epochs, seed,
//!   accumulation, and the length and a hash of the training and validation data); any difference is an [`Error::Distributed`] on every rank,
//!   naming what differs, before any step. Then rank 0's parameters, buffers and
//!   dropout generator are broadcast, so ranks built with different seeds still start
//!   alike.
//! - **Sharding.** `batch_size` is per rank: a step reads a *global batch* of
//!   `batch_size × size` samples, taken from the epoch's shuffle (the same on every
//!   rank: seed and epoch, as [`Dataset::batches`](crate::data::Dataset::batches)
//!   shuffles), and rank `r` trains on its contiguous part `[r·n/size, (r+1)·n/size)`
//!   of a global batch of `n` samples ([`Batches::sharded`](crate::data::Batches::sharded)).
//!   Every rank takes the same number of steps. A rank whose part of a short last
//!   batch is empty (fewer samples than ranks) runs the batch's last sample with
//!   weight zero.
//! - **The step.** Each rank's loss gradient is weighted by its share of the global
//!   batch (`rows / n` for a mean-reduced loss, `1` for a summed one), so that the sum
//!   the all-reduce forms is the gradient of the whole global batch; then the
//!   regulariser, frozen tensors, the non-finite check, clipping and the optimiser run
//!   on every rank on identical values, and the parameters stay identical (the
//!   all-reduce gives every rank the same sum: checked after every epoch). Two ranks at
//!   batch `b` therefore take the steps one process takes at batch `2b` on the same
//!   samples, up to the rounding of a sum split in two.
//! - **Dropout.** A rank draws its part of the mask stream the single process would
//!   draw for the global batch: before each dropout layer it moves its generator to
//!   its first row, and after it to the end of the global batch's draws. The masks are
//!   therefore those of the one-process run, and the generators stay in step. (Random
//!   draws inside layers of your own, or nested models, are not shared out this way:
//!   each rank draws its own.)
//! - **Batch norm** normalises each rank's part by its own statistics and keeps
//!   per-rank running statistics, as PyTorch's `DistributedDataParallel` does without
//!   `SyncBatchNorm`; rank 0's are the ones it saves.
//! - **History.** Losses, accuracies and metric counts are summed across ranks at the
//!   end of each epoch, so the history is the one-process run's (up to the rounding of
//!   sums in another order); validation is shared out in contiguous parts, each sample
//!   scored once. Early stopping and learning-rate callbacks decide the same on every
//!   rank. Only rank 0 shows progress and writes checkpoints; callbacks of your own run
//!   on every rank, so one that writes files should check the rank.
//! - **Failures.** A rank that fails (an error from its step, a checkpoint that cannot
//!   be written, a panic with `Mpi`) would leave the others waiting in the next
//!   all-reduce, so with more than one rank `fit` does not return the error: it prints
//!   `kiln: rank r of p failed: …` and aborts the whole job
//!   ([`Communicator::abort`]), which ends every rank at once with a non-zero status.
//!
//! - **Accumulation and backups.** With [`FitConfig::accumulate`](crate::train::FitConfig::accumulate),
//!   each rank sums its micro-batches' gradients and one all-reduce per step sums the
//!   ranks'. Only rank 0 writes backups ([`FitConfig::backup`](crate::train::FitConfig::backup)),
//!   holding the epoch's sums so far over all ranks; on a restart rank 0 reads its
//!   backup and sends the bytes to every rank, so the other ranks need no copy of the
//!   file. Every rank resumes with rank 0's batch norm statistics.
//!
//! ```
//! use kiln::distributed::{Communicator, SingleProcess};
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(2) } }
//! let data = Dataset::<f32, Shape1<4>>::new(vec![0.5; 4 * 32], vec![1; 32], Some(2))?;
//! // The same call on every rank; with MPI: FitConfig::communicator(Mpi::init()?).
//! let config = FitConfig::new(2, 8).progress(Progress::Silent).communicator(SingleProcess);
//! let history = Net::<f32>::new(0).fit(&data, None, &CrossEntropy::default(), &mut Sgd::new(0.1), &config)?;
//! assert_eq!(history.epochs.len(), 2);
//! # Ok::<(), kiln::Error>(())
//! ```

use crate::{Error, Float, Result};

/// The collectives data-parallel training uses. Implementations must give every rank
/// the same result for the same call (an all-reduce whose sums differ in their last
/// bit between ranks would let the parameters drift apart: [`fit`](crate::train::fit)
/// checks them after every epoch).
///
/// ```
/// use kiln_runtime::distributed::{Communicator, SingleProcess};
/// fn mean_across_ranks(comm: &dyn Communicator, local: f64) -> kiln_runtime::Result<f64> {
///     let mut total = [0.0];
///     comm.all_reduce_sum_f64(&[local], &mut total)?;
///     Ok(total[0] / comm.size() as f64)
/// }
/// assert_eq!(mean_across_ranks(&SingleProcess, 0.25)?, 0.25);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// `recv[i] = Σ over ranks of send[i]`, on every rank (`send.len() == recv.len()`,
    /// the same on every rank).
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// [`all_reduce_sum_f32`](Self::all_reduce_sum_f32) in `f64`.
    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()>;
    /// Copies `root`'s `bytes` into every other rank's (the same length everywhere).
    fn broadcast(&self, bytes: &mut [u8], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every rank of the job now, after printing `message` with this rank's number
    /// on standard error. A single process exits with status 1.
    fn abort(&self, message: &str) -> !;
}

/// The communicator of a process that trains alone: rank 0 of 1, where every
/// collective is a copy or nothing.
///
/// ```
/// use kiln_runtime::distributed::{Communicator, SingleProcess};
/// let comm = SingleProcess;
/// assert_eq!((comm.rank(), comm.size()), (0, 1));
/// let mut sum = [0.0_f32; 2];
/// comm.all_reduce_sum_f32(&[1.0, 2.0], &mut sum)?;
/// assert_eq!(sum, [1.0, 2.0]);
/// assert!(comm.broadcast(&mut [0u8; 4], 1).is_err()); // there is no rank 1
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        copy_same_length(send, recv)
    }

    fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
        copy_same_length(send, recv)
    }

    fn broadcast(&self, _bytes: &mut [u8], root: usize) -> Result<()> {
        check_root(root, 1)
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn abort(&self, message: &str) -> ! {
        say(format_args!("kiln: {message}"));
        std::process::exit(1)
    }
}

/// Writes `line` and a newline to standard error in one `write`. `eprintln!` writes
/// each piece of its format separately, and `mpirun`, which forwards a rank's output
/// while it prints its own abort banner, can then put the banner in the middle of the
/// line; a single write below the pipe's atomic size arrives whole.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let line = format!("{line}\n");
    // Nothing is left to tell a failure to if standard error is gone.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn copy_same_length<T: Copy>(send: &[T], recv: &mut [T]) -> Result<()> {
    if send.len() != recv.len() {
        return Err(Error::Distributed(format!(
            "all-reduce of {} values into a buffer of {}",
            send.len(),
            recv.len()
        )));
    }
    recv.copy_from_slice(send);
    Ok(())
}

fn check_root(root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::Distributed(format!(
            "broadcast from rank {root} of {size}"
        )));
    }
    Ok(())
}

/// `recv = Σ over ranks of send` for either element type.
///
/// ```
/// use kiln_runtime::distributed::{all_reduce_sum, SingleProcess};
/// let mut recv = [0.0_f64; 3];
/// all_reduce_sum(&SingleProcess, &[1.0, 2.0, 3.0], &mut recv)?;
/// assert_eq!(recv, [1.0, 2.0, 3.0]);
/// assert!(all_reduce_sum(&SingleProcess, &[1.0_f64], &mut recv).is_err()); // lengths differ
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn all_reduce_sum<T: Float>(comm: &dyn Communicator, send: &[T], recv: &mut [T]) -> Result<()> {
    T::all_reduce_sum(comm, send, recv)
}

/// Sums `values` across ranks in place (for small buffers: it copies them once).
pub(crate) fn sum_in_place(comm: &dyn Communicator, values: &mut [f64]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let send = values.to_vec();
    comm.all_reduce_sum_f64(&send, values)
}

/// Broadcasts the values of `values` from rank 0, through their bytes.
pub(crate) fn broadcast_values<T: Float>(comm: &dyn Communicator, values: &mut [T]) -> Result<()> {
    if comm.size() == 1 || values.is_empty() {
        return Ok(());
    }
    // SAFETY: `T` is `f32` or `f64` (sealed), plain old data with no padding, any bit
    // pattern of which is a valid value; the byte view covers exactly `values`.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(values),
        )
    };
    comm.broadcast(bytes, 0)
}

/// Checks that every rank holds the same value of every field, in one broadcast and
/// one all-reduce. The error, the same on every rank, names the fields that differ.
pub(crate) fn agree(comm: &dyn Communicator, fields: &[(&str, u64)]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut bytes: Vec<u8> = fields.iter().flat_map(|(_, v)| v.to_le_bytes()).collect();
    comm.broadcast(&mut bytes, 0)?;
    let mut differ: Vec<f64> = fields
        .iter()
        .zip(bytes.chunks_exact(8))
        .map(|((_, mine), root)| {
            let root = u64::from_le_bytes(root.try_into().expect("8 bytes"));
            f64::from(u8::from(root != *mine))
        })
        .collect();
    sum_in_place(comm, &mut differ)?;
    let names: Vec<String> = fields
        .iter()
        .zip(&differ)
        .filter(|(_, &ranks)| ranks > 0.0)
        .map(|((name, _), &ranks)| format!("{name} ({ranks} rank(s) differ from rank 0)"))
        .collect();
    if names.is_empty() {
        Ok(())
    } else {
        Err(Error::Distributed(format!(
            "the {} ranks disagree on {}: every rank must run the same model on the same data with the same settings",
            comm.size(),
            names.join(", ")
        )))
    }
}

/// The FNV-1a offset basis.
pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of the bits of some values (a word at a time: a data set of millions of
/// values hashes in milliseconds).
pub(crate) fn hash_values<T: Float>(values: &[T]) -> u64 {
    hash_words(values.iter().map(|v| v.to_f64().to_bits()))
}

/// FNV-1a over 64-bit words.
pub(crate) fn hash_words(words: impl Iterator<Item = u64>) -> u64 {
    words.fold(FNV_START, |hash, word| {
        (hash ^ word).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(feature = "mpi")]
pub use self::mpi_impl::Mpi;

#[cfg(feature = "mpi")]
mod mpi_impl {
    use std::sync::{Arc, Mutex, MutexGuard, Once};

    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator as _, SimpleCommunicator};
    use mpi::traits::{CommunicatorCollectives, Equivalence, Root};
    use mpi::Threading;

    use super::{check_root, Communicator};
    use crate::{Error, Result};

    /// MPI's world communicator: every process `mpirun` started. Cloning shares it; MPI
    /// is finalised when the last clone is dropped.
    ///
    /// ```no_run
    /// use kiln_runtime::distributed::{Communicator, Mpi};
    /// let comm = Mpi::init()?;
    /// println!("rank {} of {}", comm.rank(), comm.size());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    #[derive(Clone)]
    pub struct Mpi {
        inner: Arc<Inner>,
    }

    struct Inner {
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
        /// Serialises every call: MPI runs at `MPI_THREAD_SERIALIZED`, and `fit` may
        /// call from any thread of rayon's pool.
        lock: Mutex<()>,
        // Dropped last: finalises MPI.
        _universe: Universe,
    }

    // SAFETY: the communicator is a handle MPI lets any thread use at
    // MPI_THREAD_SERIALIZED (checked in `init`) as long as no two calls overlap, which
    // `lock` ensures for every call made through `Inner`.
    unsafe impl Send for Inner {}
    // SAFETY: as for `Send`: every use of the handle holds `lock`.
    unsafe impl Sync for Inner {}

    impl std::fmt::Debug for Mpi {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Mpi")
                .field("rank", &self.inner.rank)
                .field("size", &self.inner.size)
                .finish()
        }
    }

    impl Mpi {
        /// Initialises MPI (at `MPI_THREAD_SERIALIZED`) and returns the world. Also
        /// installs a panic hook that, after the usual message, aborts the whole job,
        /// so that a rank that panics does not leave the others waiting.
        ///
        /// Fails if MPI was initialised already in this process, or offers less than
        /// serialised threading.
        ///
        /// ```no_run
        /// use kiln_runtime::distributed::{Communicator, Mpi};
        /// // Under `mpirun -n 4`: each process is one rank of four.
        /// let world = Mpi::init()?;
        /// println!("rank {} of {}", world.rank(), world.size());
        /// assert!(Mpi::init().is_err()); // once per process
        /// # Ok::<(), kiln_runtime::Error>(())
        /// ```
        pub fn init() -> Result<Self> {
            let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
            else {
                return Err(Error::Distributed(
                    "MPI was initialised already: call Mpi::init once per process and clone it"
                        .into(),
                ));
            };
            if matches!(threading, Threading::Single | Threading::Funneled) {
                return Err(Error::Distributed(format!(
                    "the MPI library offers {threading:?} threading; kiln needs Serialized"
                )));
            }
            let world = universe.world();
            let rank = usize::try_from(world.rank()).expect("MPI ranks are not negative");
            let size = usize::try_from(world.size()).expect("MPI sizes are positive");
            install_panic_hook(rank, size);
            Ok(Self {
                inner: Arc::new(Inner {
                    world,
                    rank,
                    size,
                    lock: Mutex::new(()),
                    _universe: universe,
                }),
            })
        }

        fn locked(&self) -> MutexGuard<'_, ()> {
            self.inner.lock.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// `MPI_Allreduce` with `MPI_SUM`.
        fn sum<T: Equivalence>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
            if send.len() != recv.len() {
                return Err(Error::Distributed(format!(
                    "all-reduce of {} values into a buffer of {}",
                    send.len(),
                    recv.len()
                )));
            }
            let _held = self.locked();
            self.inner
                .world
                .all_reduce_into(send, recv, SystemOperation::sum());
            Ok(())
        }
    }

    fn install_panic_hook(rank: usize, size: usize) {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                super::say(format_args!(
                    "kiln: rank {rank} of {size} panicked: aborting the job"
                ));
                if size > 1 {
                    // The panicking thread may not hold the lock; this is the last
                    // MPI call the process makes.
                    SimpleCommunicator::world().abort(101);
                }
            }));
        });
    }

    impl Communicator for Mpi {
        fn rank(&self) -> usize {
            self.inner.rank
        }

        fn size(&self) -> usize {
            self.inner.size
        }

        fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
            self.sum(send, recv)
        }

        fn all_reduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) -> Result<()> {
            self.sum(send, recv)
        }

        fn broadcast(&self, bytes: &mut [u8], root: usize) -> Result<()> {
            check_root(root, self.inner.size)?;
            let _held = self.locked();
            let root = i32::try_from(root).expect("a rank fits an MPI int");
            self.inner.world.process_at_rank(root).broadcast_into(bytes);
            Ok(())
        }

        fn barrier(&self) -> Result<()> {
            let _held = self.locked();
            self.inner.world.barrier();
            Ok(())
        }

        fn abort(&self, message: &str) -> ! {
            super::say(format_args!(
                "kiln: rank {} of {} failed: {message}",
                self.inner.rank, self.inner.size
            ));
            self.inner.world.abort(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_copies_and_agrees_with_itself() {
        let comm = SingleProcess;
        let mut recv = [0.0_f32; 3];
        all_reduce_sum(&comm, &[1.0, 2.0, 3.0], &mut recv).unwrap();
        assert_eq!(recv, [1.0, 2.0, 3.0]);
        assert!(matches!(
            all_reduce_sum(&comm, &[1.0_f64], &mut [0.0; 2]),
            Err(Error::Distributed(_))
        ));
        assert!(agree(&comm, &[("batch", 3)]).is_ok());
        assert!(comm.broadcast(&mut [1], 1).is_err());
    }
}
