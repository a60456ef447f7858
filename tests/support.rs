//! Helpers shared by the integration tests: the binary with the simulator's credentials, and
//! references the simulator exports cleanly.

use std::process::{Command, Output};

use jumio_export::Kind;
use jumio_export::simulator::{self, SimOptions};

/// The simulator's default Basic-auth user.
pub const TOKEN: &str = "demo-token";
/// The simulator's default Basic-auth password.
pub const SECRET: &str = "demo-secret";

/// The `jumio-export` binary, with the simulator's credentials in its environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jumio-export"));
    c.env("JUMIO_API_TOKEN", TOKEN)
        .env("JUMIO_API_SECRET", SECRET);
    c
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` references of the default simulator population that export cleanly: no 404, no foreign
/// hrefs, final within two scheduled polls (every test job has at least two), so faults are the
/// only obstacle a test puts in the way.
pub fn exportable(n: usize) -> Vec<(String, Kind)> {
    let seed = SimOptions::default().seed;
    let refs: Vec<_> = simulator::population(seed, n * 3 + 20)
        .into_iter()
        .filter(|(r, _)| {
            let sc = simulator::scenario(seed, r).expect("population references are known");
            let polls_ok = match sc.polls {
                simulator::Polls::Ready => true,
                simulator::Polls::After(n) => n <= 2,
                simulator::Polls::Never => false,
            };
            !sc.retention_404 && polls_ok && !sc.foreign_hrefs
        })
        .take(n)
        .collect();
    assert_eq!(
        refs.len(),
        n,
        "the population has too few exportable references"
    );
    refs
}

/// A simulator on a loopback port with a runtime of its own, for tests that drive the binary
/// synchronously; shut down when dropped.
pub struct BlockingSim {
    rt: tokio::runtime::Runtime,
    api: Option<simulator::SimHandle>,
}

impl BlockingSim {
    /// Starts one with `opts`.
    pub fn start(opts: SimOptions) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let api = rt
            .block_on(simulator::start(
                opts,
                "127.0.0.1:0".parse().expect("loopback"),
            ))
            .expect("the simulator starts on loopback");
        BlockingSim { rt, api: Some(api) }
    }

    /// Its handle (base URL, request log).
    pub fn api(&self) -> &simulator::SimHandle {
        self.api.as_ref().expect("running until dropped")
    }
}

impl Drop for BlockingSim {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            self.rt.block_on(api.shutdown());
        }
    }
}

/// Writes `job.toml` and a reference list named `refs_name` into `dir`; returns both paths.
pub fn job_files(
    dir: &std::path::Path,
    job: &str,
    refs_name: &str,
    refs: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let job_path = dir.join("job.toml");
    std::fs::write(&job_path, job).expect("job file written");
    let refs_path = dir.join(refs_name);
    std::fs::write(&refs_path, refs).expect("reference list written");
    (job_path, refs_path)
}

/// Every entry of an archive by name, each name checked with `enclosed_name`.
pub fn zip_entries(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(path).expect("archive opens")).expect("a zip");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).expect("entry readable");
        let name = f.name().expect("entry name").to_string();
        assert!(f.enclosed_name().is_some(), "unsafe entry name {name:?}");
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).expect("entry body");
        out.insert(name, buf);
    }
    out
}

/// Rows of a Parquet file, read with arrow's reader.
pub fn parquet_rows(path: &std::path::Path) -> usize {
    let f = std::fs::File::open(path).expect("parquet file opens");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("a parquet file")
        .build()
        .expect("a reader")
        .map(|b| b.expect("a record batch").num_rows())
        .sum()
}

/// A CSV table: its header and its rows as column → value.
pub fn csv_table(
    path: &std::path::Path,
) -> (Vec<String>, Vec<std::collections::BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).expect("csv opens");
    let header: Vec<String> = r
        .headers()
        .expect("a header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.expect("a record");
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
