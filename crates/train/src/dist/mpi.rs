//! The world of an MPI job (`mpirun -np N finetune train ...`), over the `mpi` crate's bindings.

use std::sync::{Mutex, MutexGuard};

use ::mpi::datatype::{Partition, PartitionMut};
use ::mpi::environment::{Threading, Universe};
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;

use super::Collective;

/// `MPI_COMM_WORLD`; MPI is finalized when this drops.
pub struct MpiWorld {
    world: SimpleCommunicator,
    /// Held during every call: the communication thread and the training thread never call MPI at once, as
    /// `MPI_THREAD_SERIALIZED` requires (the training loop already waits for the thread; this makes it certain).
    serial: Mutex<()>,
    /// The library granted `MPI_THREAD_SERIALIZED` or more.
    serialized: bool,
    // Dropped after `world`: finalizes MPI.
    _universe: Universe,
}

// SAFETY: the communicator is a handle that MPI lets any thread use once the library runs at
// MPI_THREAD_SERIALIZED, and every call goes through `serial`. Where the library grants less, `other_threads`
// is false and the world stays on the thread that created it.
unsafe impl Send for MpiWorld {}
// SAFETY: as above.
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// Initializes MPI when this process was started by an MPI launcher (`mpirun`, `srun`, an MPIJob), else
    /// `None`: a plain start stays one process and needs no MPI runtime.
    pub fn from_launcher() -> Option<Self> {
        const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"];
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return None;
        }
        // The gradient exchange runs on its own thread while the backward pass goes on.
        let (universe, granted) = ::mpi::initialize_with_threading(Threading::Serialized)?;
        let serialized = granted >= Threading::Serialized;
        Some(MpiWorld { world: universe.world(), serial: Mutex::new(()), serialized, _universe: universe })
    }
}

impl MpiWorld {
    fn serial(&self) -> MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`). Does not wait for `serial`: the communication thread
    /// may be blocked in a collective that the failed rank will never join.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

fn counts_displs(counts: &[usize]) -> (Vec<i32>, Vec<i32>) {
    // `Reducer::new` refused gradients whose counts or offsets do not fit in 32 bits.
    let c: Vec<i32> = counts.iter().map(|&n| n as i32).collect();
    let d: Vec<i32> = c.iter().scan(0i32, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
    (c, d)
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_gather_f64(&self, values: &[f64]) -> Vec<f64> {
        let _serial = self.serial();
        let mut out = vec![0.0; values.len() * self.size()];
        self.world.all_gather_into(values, &mut out[..]);
        out
    }

    fn all_to_all_v(&self, send: &[f32], send_counts: &[usize], recv: &mut [f32], recv_counts: &[usize]) {
        let _serial = self.serial();
        let (sc, sd) = counts_displs(send_counts);
        let (rc, rd) = counts_displs(recv_counts);
        // Open MPI rejects the dangling pointer of an empty slice even with zero counts: lend it a real one.
        let (dummy_send, mut dummy_recv) = ([0f32; 1], [0f32; 1]);
        let send = if send.is_empty() { &dummy_send[..0] } else { send };
        let recv = if recv.is_empty() { &mut dummy_recv[..0] } else { recv };
        self.world.all_to_all_varcount_into(&Partition::new(send, sc, sd), &mut PartitionMut::new(recv, rc, rd));
    }

    fn all_gather_v(&self, mine: &[f32], out: &mut [f32], counts: &[usize]) {
        let _serial = self.serial();
        let (c, d) = counts_displs(counts);
        let (dummy_mine, mut dummy_out) = ([0f32; 1], [0f32; 1]);
        let mine = if mine.is_empty() { &dummy_mine[..0] } else { mine };
        let out = if out.is_empty() { &mut dummy_out[..0] } else { out };
        self.world.all_gather_varcount_into(mine, &mut PartitionMut::new(out, c, d));
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let _serial = self.serial();
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        // Open MPI rejects the dangling pointer of an empty slice.
        if len > 0 {
            root.broadcast_into(&mut bytes[..]);
        }
    }

    fn barrier(&self) {
        let _serial = self.serial();
        self.world.barrier();
    }

    fn other_threads(&self) -> bool {
        self.serialized
    }
}
