-- The hot statements of the job state machine, by name (``-- name: x`` opens one).
--
-- Each is a template read by jobqueue/transitions/fastsql.py: {job.status} and the like
-- become the quoted table and column names of the models (so a renamed column cannot
-- drift), {job.columns} every concrete column in field order, {q.other} a statement
-- above, {const.NAME} a value of jobqueue/constants.py; %s are parameters. Every statement has an ORM twin in the transition that runs
-- it, and tests/test_fast_path.py checks that both leave the same rows and Redis state.

-- name: claim
-- claim: queued|scheduled -> running for one worker. Returns the row and the job's
-- highest Execution number (above ``attempts`` once a requeue reset them).
-- Parameters: running, started_at, worker_id, updated_at, id, queued, scheduled.
UPDATE {job.table}
SET {job.status} = %s, {job.attempts} = {job.attempts} + 1, {job.started_at} = %s,
    {job.finished_at} = NULL, {job.worker_id} = %s, {job.updated_at} = %s
WHERE {job.id} = %s AND {job.status} IN (%s, %s)
RETURNING {job.columns},
    (SELECT MAX({execution.attempt}) FROM {execution.table}
     WHERE {execution.job_id} = {job.table}.{job.id})

-- name: succeed
-- succeed: running -> succeeded, guarded by this attempt's number.
-- Parameters: succeeded, result, finished_at, updated_at, id, running, attempts.
UPDATE {job.table}
SET {job.status} = %s, {job.result} = %s, {job.finished_at} = %s, {job.progress} = {const.MAX_PROGRESS},
    {job.error} = '', {job.updated_at} = %s
WHERE {job.id} = %s AND {job.status} = %s AND {job.attempts} = %s

-- name: insert_execution
-- An attempt's Execution row. Parameters: every column but the id, in field order.
INSERT INTO {execution.table} ({execution.columns}) VALUES ({execution.marks})

-- name: succeed_with_execution
-- succeed and its Execution row in one statement (PostgreSQL).
WITH done AS ({q.succeed} RETURNING {job.id})
INSERT INTO {execution.table} ({execution.columns}) SELECT {execution.typed_marks} FROM done

-- name: claim_many
-- claim, of several jobs at once (the ids of one array). Parameters as for claim.
UPDATE {job.table}
SET {job.status} = %s, {job.attempts} = {job.attempts} + 1, {job.started_at} = %s,
    {job.finished_at} = NULL, {job.worker_id} = %s, {job.updated_at} = %s
WHERE {job.id} = ANY(CAST(%s AS uuid[])) AND {job.status} IN (%s, %s)
RETURNING {job.columns},
    (SELECT MAX({execution.attempt}) FROM {execution.table}
     WHERE {execution.job_id} = {job.table}.{job.id})

-- name: record_and_claim
-- Several successes, each with its Execution row, and the claim of the worker's next
-- jobs, in one statement (PostgreSQL). [succeeded] and [executions] stand for as many
-- rows of parameters as successes (see fastsql.record_and_claim): per success its id,
-- attempt, result, start and end; per Execution row every column but the id. Each
-- success is guarded as succeed's is, and its start is the one the worker saw (a job
-- claimed ahead started later than its claim). Returns the ids that succeeded, on each
-- claimed row (one row of NULLs if nothing was claimed).
WITH succeeded (id, attempts, result, started_at, finished_at) AS (VALUES [succeeded]),
     done AS (UPDATE {job.table}
              SET {job.status} = %s, {job.result} = succeeded.result, {job.started_at} = succeeded.started_at,
                  {job.finished_at} = succeeded.finished_at, {job.progress} = {const.MAX_PROGRESS},
                  {job.error} = '', {job.updated_at} = succeeded.finished_at
              FROM succeeded
              WHERE {job.table}.{job.id} = succeeded.id AND {job.table}.{job.status} = %s
                AND {job.table}.{job.attempts} = succeeded.attempts
              RETURNING {job.table}.{job.id}),
     logged AS (INSERT INTO {execution.table} ({execution.columns})
                SELECT * FROM (VALUES [executions]) AS attempt ({execution.columns})
                WHERE attempt.{execution.job_id} IN (SELECT {job.id} FROM done)),
     claimed AS ({q.claim_many} AS last_execution)
SELECT ARRAY(SELECT {job.id} FROM done), claimed.* FROM (SELECT 1) AS one LEFT JOIN claimed ON TRUE

-- name: generic_plans
-- Not a transition: plan the rest of the transaction's prepared statements generically
-- (plan_cache_mode, until the transaction ends). Sent before record_and_claim in its
-- implicit transaction (see fastsql._recorded): planned afresh each time, it took longer
-- to plan than to run.
SELECT set_config('plan_cache_mode', 'force_generic_plan', true)

-- name: insert_job
-- enqueue: a new job. Parameters: every column, in field order.
INSERT INTO {job.table} ({job.columns}) VALUES ({job.marks})

-- name: insert_fresh_job
-- enqueue: a new job whose columns in fastsql.FRESH_JOB hold their defaults, written as
-- constants (fewer parameters to send). Parameters: the other columns, in field order.
INSERT INTO {job.table} ({job.columns}) VALUES ({job.fresh_marks})

-- name: insert_job_pushed
-- insert_job (PostgreSQL), for a job pushed to Redis while this statement runs (see
-- create.insert_plain): it takes the job's advisory lock, held until the row commits,
-- which a worker's wait_for_insert waits for. Parameters: insert_job's, then the lock's keys.
{q.insert_job} RETURNING pg_advisory_xact_lock(%s, %s)

-- name: insert_fresh_job_pushed
-- insert_fresh_job, likewise. Parameters: insert_fresh_job's, then the lock's keys.
{q.insert_fresh_job} RETURNING pg_advisory_xact_lock(%s, %s)

-- name: wait_for_insert
-- Wait until a job's insert_job_pushed (if one runs) has committed or rolled back, for at
-- most the lock timeout given (milliseconds, as text); run before a claim in the same
-- transaction, whose next statement then sees the row. Parameters: the lock's keys, the timeout.
SELECT pg_advisory_xact_lock_shared(%s, %s) FROM (SELECT set_config('lock_timeout', %s, true)) AS bounded
