-- Every statement the engine writes by hand, each once, whole, under its name.
--
-- `workers.sql.queries["name"]` returns one statement. Each is hand-written
-- because it is a hot path the ORM would spread over several round trips, or
-- a PostgreSQL feature the ORM has no word for; its comment says which.
-- Values are always parameters (`%(name)s`); the `now` parameter is the
-- caller's time where one is given (tests pin the clock), else NULL, and the
-- statement reads the server's own clock (`statement_timestamp()`).
--
-- Tables: orders_order (`Order`), orders_orderevent (`OrderEvent`),
-- workers_bucket (`Bucket`). tests/engine/test_statements.py holds these
-- statements to the models and to the ORM's rules (`LEASE_CLEARED`,
-- `CLAIM_ORDER`).


-- name: clock
-- The database's time (`workers.clock.now`): no ORM word for the server's clock.
SELECT statement_timestamp();


-- name: ping
-- The health check's question (`/healthz`): does the database answer at all.
SELECT 1;


-- name: claimable
-- What a worker may take at `now`, best first, on any engine (the claim on
-- SQLite, and the kitchen display's "next up"). Ownership is read inside the
-- statement, so a worker acting on a stale view of the ring takes nothing it
-- lost. A pinned (takeaway) order is its shop's alone, whichever incarnation
-- of the shop asks; an order taken from a worker that overran a stage
-- (`avoid_worker_id`) is any other worker's, and that worker's again only
-- after `avoid_before`; with stealing on
-- (`steal_before` not NULL) an unpinned order waiting since before it is
-- anyone's. Walks `order_claim_idx`. Hand-written: the ORM cannot say "the
-- bucket is owned by me" without a join the index cannot serve.
SELECT id FROM orders_order
WHERE status = 'queued' AND eligible_at <= %(now)s
  AND (avoid_worker_id IS NULL OR avoid_worker_id <> %(worker)s OR eligible_at < %(avoid_before)s)
  AND (pinned_shop = (SELECT name FROM workers_worker WHERE id = %(worker)s)
       OR (pinned_shop = ''
           AND (bucket IN (SELECT number FROM workers_bucket WHERE owner_id = %(worker)s)
                OR avoid_worker_id IS NOT NULL
                OR eligible_at < %(steal_before)s)))
ORDER BY rank, created_at
LIMIT %(limit)s;


-- name: claim
-- The claim on PostgreSQL: pick (the `claimable` rule, FOR UPDATE SKIP LOCKED),
-- lease, and write the `claimed` events from the UPDATE's own rows, in one
-- statement: one round trip where the ORM takes five, and the events commit
-- with the lease or not at all. `steal_after` is NULL with stealing off. The
-- clock is written inline, not joined from a CTE: the join cost the claim
-- 0.6 ms (bench: a claim of one, 1.9 ms inline against 2.5 ms joined). The
-- stage is kept: a queued order has none, but one handed over by a stopping
-- kitchen (`leases.HANDED_OVER`) goes on where its staff left it.
WITH picked AS (
    SELECT id FROM orders_order
    WHERE status = 'queued' AND eligible_at <= COALESCE(%(now)s::timestamptz, statement_timestamp())
      AND (avoid_worker_id IS NULL OR avoid_worker_id <> %(worker)s
           OR eligible_at < COALESCE(%(now)s::timestamptz, statement_timestamp()) - %(lease)s::interval)
      AND (pinned_shop = (SELECT name FROM workers_worker WHERE id = %(worker)s)
           OR (pinned_shop = ''
               AND (bucket IN (SELECT number FROM workers_bucket WHERE owner_id = %(worker)s)
                    OR avoid_worker_id IS NOT NULL
                    OR eligible_at < COALESCE(%(now)s::timestamptz, statement_timestamp()) - %(steal_after)s::interval)))
    ORDER BY rank, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE orders_order SET status = 'preparing', worker_id = %(worker)s, lease_token = %(token)s,
        lease_expires_at = COALESCE(%(now)s::timestamptz, statement_timestamp()) + %(lease)s::interval,
        attempts = attempts + 1, claimed_at = COALESCE(%(now)s::timestamptz, statement_timestamp()),
        avoid_worker_id = NULL
    WHERE id IN (SELECT id FROM picked)
    RETURNING *
),
recorded AS (
    INSERT INTO orders_orderevent (order_id, kind, created_at, worker_id, stage, message, data)
    SELECT id, 'claimed', claimed_at, %(worker)s, stage, '', jsonb_build_object('attempt', attempts)
    FROM claimed ORDER BY rank, created_at
)
SELECT claimed.*, pg_notify('pizzaqueue_events', '') FROM claimed;


-- name: complete
-- Completion on PostgreSQL: each order fenced by its own token, and the `done`
-- events written from the UPDATE's rows, in one statement; a made order then
-- waits at its shop, a takeaway on the counter, a delivery on the shelf (the ORM: a
-- transaction of five). Under READ COMMITTED a row re-queued meanwhile is
-- re-checked against its new version, so a lost lease is never completed.
WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now),
held (id, token) AS (SELECT * FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[])),
done AS (
    UPDATE orders_order o SET status = 'done', finished_at = clock.now,
        handover = CASE WHEN o.kind = 'takeaway' THEN 'counter' ELSE 'shelf' END,
        lease_token = NULL, lease_expires_at = NULL, stage = '', stage_started_at = NULL
    FROM held, clock
    WHERE o.id = held.id AND o.lease_token = held.token AND o.status = 'preparing'
    RETURNING o.id, o.finished_at
),
recorded AS (
    INSERT INTO orders_orderevent (order_id, kind, created_at, worker_id, stage, message, data)
    SELECT id, 'done', finished_at, %(worker)s, '', '', '{}'::jsonb FROM done
)
SELECT id, pg_notify('pizzaqueue_events', '') FROM done;


-- name: place
-- A delivery order with its `placed` event and both wake-ups, in one statement
-- (the ORM: a transaction of five). A taken idempotency key makes the INSERT do
-- nothing (ON CONFLICT on the key's partial index), so a client's retry leaves
-- no error in the log. The workers' wake-up names the owner of the order's
-- bucket, the only worker that may claim it. Its clock is the server's, read
-- once: `created_at`, and `eligible_at` (its `not_before`, never before it was
-- placed) and `rank` (`intake.rank_for`: the eligible time in microseconds, less
-- the priority's offset) from it, and `promised_at` (the shop's quote, seconds from
-- `eligible_at`: a parameter, or its SQL spliced in by `intake.place_statement`).
-- `synchronous_commit` is 'off' where the flush is waited for after, in a second
-- transaction (`committed_then_flushed` in `workers.sql`); NULL leaves it as it is.
WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now),
due AS (SELECT GREATEST(COALESCE(%(not_before)s::timestamptz, clock.now), clock.now) AS at FROM clock),
placed AS (
    INSERT INTO orders_order (
        id, status, kind, items, total, delivery_fee, note, customer_name, address, phone, area, bucket,
        pinned_shop, priority,
        rank, eligible_at, attempts, max_attempts, worker_id, lease_token, lease_expires_at,
        stage, stage_started_at, avoid_worker_id, estimated_seconds, promised_at, last_error, cancel_reason,
        idempotency_key, request_hash, created_at, claimed_at, finished_at, placed_by_id,
        placed_by_session, handover, driver_id, handover_token, out_at, handed_over_at, paid_at, payment_method
    )
    SELECT %(id)s, 'queued', %(kind)s, %(items)s, %(total)s, %(delivery_fee)s, %(note)s, %(customer_name)s, %(address)s,
        %(phone)s, %(area)s, %(bucket)s, '',
        %(priority)s, (EXTRACT(EPOCH FROM due.at) * 1000000)::bigint - %(rank_offset)s, due.at, 0,
        %(max_attempts)s, NULL, NULL, NULL, '', NULL, NULL, %(estimated_seconds)s,
        due.at + %(promise_seconds)s::float8 * interval '1 second', '', '',
        %(idempotency_key)s, %(request_hash)s, clock.now, NULL, NULL, %(placed_by_id)s,
        %(placed_by_session)s, '', NULL, NULL, NULL, NULL, NULL, ''
    FROM clock, due
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, created_at, eligible_at, rank, bucket, promised_at
),
recorded AS (
    INSERT INTO orders_orderevent (order_id, kind, created_at, worker_id, stage, message, data)
    SELECT id, 'placed', created_at, NULL, '', '', '{}'::jsonb FROM placed
)
SELECT created_at, eligible_at, rank, promised_at, pg_notify('pizzaqueue_events', ''),
    pg_notify('pizzaqueue_orders', COALESCE((SELECT owner_id::text FROM workers_bucket WHERE number = placed.bucket), '')),
    set_config('synchronous_commit', COALESCE(%(synchronous_commit)s, current_setting('synchronous_commit')), true)
FROM placed;


-- name: wait_for_flush
-- Returns once the log is on disk up to here, so every commit already visible
-- is durable: a transactional logical message is the smallest write a commit
-- waits for, and it changes no table (logical decoding sees a `pizzaqueue`
-- message). No ORM word for it.
SELECT pg_logical_emit_message(true, 'pizzaqueue', 'flush');


-- name: notify_orders
-- Wakes the workers when the caller's transaction commits: an order became
-- claimable, for anyone (empty payload). NOTIFY has no ORM word.
SELECT pg_notify('pizzaqueue_orders', '');


-- name: notify_events
-- Wakes every web process's relay when the caller's transaction commits: new events.
SELECT pg_notify('pizzaqueue_events', '');


-- name: notify_events_and_orders
-- Both wake-ups at once, for a change that wrote events and made work claimable.
SELECT pg_notify('pizzaqueue_events', ''), pg_notify('pizzaqueue_orders', '');


-- name: listen_orders
-- A worker's LISTEN connection subscribes once per connection.
LISTEN pizzaqueue_orders;


-- name: listen_events
-- A relay's LISTEN connection subscribes once per connection.
LISTEN pizzaqueue_events;


-- name: lock_ring
-- Serialises membership changes until the transaction ends (an advisory lock).
SELECT pg_advisory_xact_lock(%s);


-- name: lock_timeout
-- The longest this transaction's statements wait for a lock (SET LOCAL takes no parameter).
SELECT set_config('lock_timeout', %s, true);


-- name: idle_in_transaction_timeout
-- A session left idle inside a transaction longer than this is ended by the server.
SELECT set_config('idle_in_transaction_session_timeout', %s, false);


-- name: snapshot_xmin
-- An expression, not a statement: the oldest transaction still running in this
-- statement's snapshot (the relay's test of whether a missing event id can still appear).
pg_snapshot_xmin(pg_current_snapshot())::text::bigint


-- name: snapshot_xmax
-- An expression: the first transaction id not yet assigned when this statement's snapshot was taken.
pg_snapshot_xmax(pg_current_snapshot())::text::bigint
