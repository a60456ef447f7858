//! `--shard auto`: this copy's shard of an array job, read from the variables the scheduler that
//! started it sets. Pure: the environment is a function handed in, so every scheduler is tested
//! without one.
//!
//! | scheduler | index | count |
//! |---|---|---|
//! | Kubernetes Indexed Job | `JOB_COMPLETION_INDEX` | `--shard-count N` (the Job's `completions`; Kubernetes does not set it) |
//! | AWS Batch array job | `AWS_BATCH_JOB_ARRAY_INDEX` | `AWS_BATCH_JOB_ARRAY_SIZE` (set it in the job definition's environment to the array size), or `--shard-count N` |
//! | Slurm job array | `SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` | `SLURM_ARRAY_TASK_COUNT` (a contiguous array with step 1) |
//! | Cloud Run job | `CLOUD_RUN_TASK_INDEX` | `CLOUD_RUN_TASK_COUNT` |
//!
//! Absent, unparseable, inconsistent (index outside the count, a count disagreeing with
//! `--shard-count`, a Slurm array with gaps) or ambiguous (two schedulers' variables at once) is
//! an error naming the variables: a copy that guessed its shard would export another's
//! references or none.

use crate::job::Shard;

/// The shard and the scheduler it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// This copy's shard.
    pub shard: Shard,
    /// `kubernetes`, `aws-batch`, `slurm` or `cloud-run`.
    pub scheduler: &'static str,
}

/// The variable each scheduler sets its index in, by scheduler.
const INDEX_VARS: [(&str, &str); 4] = [
    ("kubernetes", "JOB_COMPLETION_INDEX"),
    ("aws-batch", "AWS_BATCH_JOB_ARRAY_INDEX"),
    ("slurm", "SLURM_ARRAY_TASK_ID"),
    ("cloud-run", "CLOUD_RUN_TASK_INDEX"),
];

/// Reads this copy's shard from `env` (a variable's value, `None` when unset); `count` is
/// `--shard-count`. The error says what is missing or wrong, naming the variables.
pub fn detect(
    env: &dyn Fn(&str) -> Option<String>,
    count: Option<u32>,
) -> Result<Detected, String> {
    let scheduler = which_scheduler(env)?;
    let (index, from_env, count_names) = match scheduler {
        "kubernetes" => (
            required(env, "JOB_COMPLETION_INDEX")?,
            None,
            "--shard-count",
        ),
        "aws-batch" => (
            required(env, "AWS_BATCH_JOB_ARRAY_INDEX")?,
            number(env, "AWS_BATCH_JOB_ARRAY_SIZE")?.map(|n| ("AWS_BATCH_JOB_ARRAY_SIZE", n)),
            "AWS_BATCH_JOB_ARRAY_SIZE or --shard-count",
        ),
        "slurm" => slurm(env)?,
        _ => (
            required(env, "CLOUD_RUN_TASK_INDEX")?,
            Some((
                "CLOUD_RUN_TASK_COUNT",
                required(env, "CLOUD_RUN_TASK_COUNT")?,
            )),
            "CLOUD_RUN_TASK_COUNT",
        ),
    };
    let count = match (from_env, count) {
        (Some((var, n)), Some(flag)) if n != flag => {
            return Err(format!(
                "--shard auto: {var}={n} disagrees with --shard-count {flag}"
            ));
        }
        (Some((_, n)), _) => n,
        (None, Some(flag)) => flag,
        (None, None) => {
            return Err(format!(
                "--shard auto: {scheduler} sets the index but not the count: give {count_names} \
                 (the number of shards)"
            ));
        }
    };
    if count == 0 || index >= count {
        let index_var = INDEX_VARS
            .iter()
            .find(|(s, _)| *s == scheduler)
            .map_or("", |(_, v)| v);
        return Err(format!(
            "--shard auto: {scheduler}: shard index {index} (from {index_var}) is not below the \
             count {count}: the array must number its tasks 0 to N-1"
        ));
    }
    Ok(Detected {
        shard: Shard { index, count },
        scheduler,
    })
}

/// The one scheduler whose index variable is set.
fn which_scheduler(env: &dyn Fn(&str) -> Option<String>) -> Result<&'static str, String> {
    let set: Vec<(&str, &str)> = INDEX_VARS
        .iter()
        .copied()
        .filter(|(_, var)| env(var).is_some())
        .collect();
    match set.as_slice() {
        [one] => Ok(one.0),
        [] => Err(format!(
            "--shard auto: no array-job index found: none of {} is set (Kubernetes Indexed \
                 Job, AWS Batch array job, Slurm job array, Cloud Run job); outside a scheduler \
                 give --shard K/N",
            INDEX_VARS.map(|(_, v)| v).join(", ")
        )),
        many => Err(format!(
            "--shard auto: ambiguous: {} are all set; the index must come from one scheduler: \
                 unset the others or give --shard K/N",
            many.iter()
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// A scheduler's index, its count variable and value if it sets one, and what gives the count.
type FromEnv = (u32, Option<(&'static str, u32)>, &'static str);

/// Slurm's shard: `SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`, for a
/// contiguous array only.
fn slurm(env: &dyn Fn(&str) -> Option<String>) -> Result<FromEnv, String> {
    let id = required(env, "SLURM_ARRAY_TASK_ID")?;
    let min = required(env, "SLURM_ARRAY_TASK_MIN")?;
    let task_count = required(env, "SLURM_ARRAY_TASK_COUNT")?;
    if let Some(step) = number(env, "SLURM_ARRAY_TASK_STEP")?
        && step != 1
    {
        return Err(format!(
            "--shard auto: SLURM_ARRAY_TASK_STEP={step}: the array must be contiguous \
                     (--array=0-{}), so that SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN numbers \
                     the shards 0 to N-1",
            task_count.saturating_sub(1)
        ));
    }
    let index = id.checked_sub(min).ok_or_else(|| {
        format!("--shard auto: SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
    })?;
    Ok((
        index,
        Some(("SLURM_ARRAY_TASK_COUNT", task_count)),
        "SLURM_ARRAY_TASK_COUNT",
    ))
}

/// The value of `var` as a number; `None` when unset.
fn number(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<u32>, String> {
    match env(var) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("--shard auto: {var}={v:?} is not a non-negative integer")),
    }
}

/// The value of `var`, which must be set.
fn required(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<u32, String> {
    number(env, var)?.ok_or_else(|| format!("--shard auto: {var} is not set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn shard(
        vars: &[(&str, &str)],
        count: Option<u32>,
    ) -> Result<(u32, u32, &'static str), String> {
        detect(&env(vars), count).map(|d| (d.shard.index, d.shard.count, d.scheduler))
    }

    #[test]
    fn each_scheduler_gives_its_shard() {
        assert_eq!(
            shard(&[("JOB_COMPLETION_INDEX", "3")], Some(8)),
            Ok((3, 8, "kubernetes"))
        );
        assert_eq!(
            shard(
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                    ("AWS_BATCH_JOB_ARRAY_SIZE", "4")
                ],
                None
            ),
            Ok((0, 4, "aws-batch"))
        );
        assert_eq!(
            shard(&[("AWS_BATCH_JOB_ARRAY_INDEX", "2")], Some(4)),
            Ok((2, 4, "aws-batch"))
        );
        // Slurm arrays may start anywhere: --array=1-16 numbers its tasks 1 to 16.
        assert_eq!(
            shard(
                &[
                    ("SLURM_ARRAY_TASK_ID", "16"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "16"),
                    ("SLURM_ARRAY_TASK_COUNT", "16"),
                    ("SLURM_ARRAY_TASK_STEP", "1"),
                ],
                None
            ),
            Ok((15, 16, "slurm"))
        );
        assert_eq!(
            shard(
                &[("CLOUD_RUN_TASK_INDEX", "1"), ("CLOUD_RUN_TASK_COUNT", "2")],
                Some(2)
            ),
            Ok((1, 2, "cloud-run"))
        );
    }

    /// Variables a test sets: name, value.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn absent_inconsistent_or_ambiguous_variables_are_errors_naming_them() {
        let cases: [(Vars, Option<u32>, &str); 10] = [
            (
                &[],
                Some(4),
                "none of JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX",
            ),
            (&[("JOB_COMPLETION_INDEX", "1")], None, "give --shard-count"),
            (
                &[("JOB_COMPLETION_INDEX", "4")],
                Some(4),
                "index 4 (from JOB_COMPLETION_INDEX)",
            ),
            (
                &[("JOB_COMPLETION_INDEX", "x")],
                Some(4),
                "JOB_COMPLETION_INDEX=\"x\"",
            ),
            (
                &[("AWS_BATCH_JOB_ARRAY_INDEX", "1")],
                None,
                "AWS_BATCH_JOB_ARRAY_SIZE or --shard-count",
            ),
            (
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                    ("AWS_BATCH_JOB_ARRAY_SIZE", "4"),
                ],
                Some(5),
                "AWS_BATCH_JOB_ARRAY_SIZE=4 disagrees with --shard-count 5",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "3"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ],
                None,
                "SLURM_ARRAY_TASK_MIN is not set",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "6"),
                    ("SLURM_ARRAY_TASK_MIN", "0"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                ],
                None,
                "SLURM_ARRAY_TASK_STEP=2",
            ),
            (
                &[("CLOUD_RUN_TASK_INDEX", "0")],
                None,
                "CLOUD_RUN_TASK_COUNT is not set",
            ),
            (
                &[("JOB_COMPLETION_INDEX", "0"), ("CLOUD_RUN_TASK_INDEX", "0")],
                Some(2),
                "ambiguous: JOB_COMPLETION_INDEX and CLOUD_RUN_TASK_INDEX",
            ),
        ];
        for (vars, count, want) in cases {
            let err = shard(vars, count).unwrap_err();
            assert!(err.contains(want), "{vars:?}: {err}");
            assert!(err.starts_with("--shard auto: "), "{err}");
        }
        // A Slurm array with gaps (--array=1,3,7): the index runs past the count.
        let err = shard(
            &[
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("index 6 (from SLURM_ARRAY_TASK_ID) is not below the count 3"),
            "{err}"
        );
    }
}
