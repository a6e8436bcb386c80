-- Every statement the shop writes by hand, each once, whole, under its name.
--
-- `orders.sql.queries["name"]` returns one statement (see `workers/queries.sql`
-- for the engine's). These read only the shop's own tables (the menu, DRF's
-- tokens, Django's users and permissions) or ask the planner about the
-- engine's. Where the two engines need different words, a statement is
-- written once for each, named `…_postgresql` and `…_sqlite`.
-- tests/shop/test_statements.py holds the column lists to the models.


-- name: token_user_and_permission_ids_postgresql
-- A token and its user, by key (the join DRF's `select_related("user").get(key=…)`
-- compiles afresh on every API request, written once, the columns of both models
-- in field order for `workers.sql.load`), then the ids of the user's permissions
-- through their groups and directly (ModelBackend's two queries, as columns):
-- every request's role check reads them, and would otherwise cost two more queries. Ids, not
-- names: each subquery reads one table by its index, where joining the
-- permissions and their content types for the names cost PostgreSQL three times
-- the rest of the lookup; each process names the ids itself
-- (`orders.authentication`). The groups as an array, not a join: half the cost again.
SELECT t.key, t.user_id, t.created,
    u.id, u.password, u.last_login, u.is_superuser, u.username, u.first_name, u.last_name,
    u.email, u.is_staff, u.is_active, u.date_joined,
    ARRAY(SELECT permission_id FROM auth_group_permissions
          WHERE group_id = ANY(ARRAY(SELECT group_id FROM auth_user_groups WHERE user_id = u.id))),
    ARRAY(SELECT permission_id FROM auth_user_user_permissions WHERE user_id = u.id)
FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id
WHERE t.key = %s;


-- name: token_user_and_permission_ids_sqlite
-- The same on SQLite, which has no arrays: each list of ids as "1,2,3" (or NULL).
SELECT t.key, t.user_id, t.created,
    u.id, u.password, u.last_login, u.is_superuser, u.username, u.first_name, u.last_name,
    u.email, u.is_staff, u.is_active, u.date_joined,
    (SELECT group_concat(permission_id) FROM auth_group_permissions
     WHERE group_id IN (SELECT group_id FROM auth_user_groups WHERE user_id = u.id)),
    (SELECT group_concat(permission_id) FROM auth_user_user_permissions WHERE user_id = u.id)
FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id
WHERE t.key = %s;


-- name: menu_postgresql
-- Slug, bake seconds and the three prices of the available pizzas among some
-- slugs (an array), and the delivery area's own fee if it has one (the row
-- without a slug; NULL area: none). Every order asks this, in one round trip:
-- the ORM compiled the same query each time for longer than it ran.
SELECT slug, bake_seconds, price_small, price_medium, price_large FROM orders_pizza
WHERE available AND slug = ANY(%s)
UNION ALL
SELECT NULL, NULL, fee, NULL, NULL FROM orders_deliveryfee WHERE upper(area) = upper(%s);


-- name: menu_sqlite
-- The same on SQLite: the slugs as a JSON list.
SELECT slug, bake_seconds, price_small, price_medium, price_large FROM orders_pizza
WHERE available AND slug IN (SELECT value FROM json_each(%s))
UNION ALL
SELECT NULL, NULL, fee, NULL, NULL FROM orders_deliveryfee WHERE upper(area) = upper(%s);


-- name: estimate_orders
-- PostgreSQL's estimate of the orders table's rows: statistics only, nothing is
-- scanned. No ORM word for EXPLAIN's plan as data.
EXPLAIN (FORMAT JSON) SELECT 1 FROM orders_order;


-- name: estimate_orders_with_status
-- PostgreSQL's estimate of the orders with one status (the parameter).
EXPLAIN (FORMAT JSON) SELECT 1 FROM orders_order WHERE status = %s;


-- name: quote
-- A new order's quote (`orders.promises.quote`), in one statement: the shop that
-- will make it (its takeaway shop's newest live process, or its bucket's owner, or
-- the process `worker`) with its slots, handler
-- and measured pace, and the work ahead of it there: the menu seconds and count of
-- the queued orders it claims first (no higher rank, due by now: `order_claim_idx`, only
-- those of its buckets or pinned to it), and the count and menu seconds of the
-- orders in its kitchen (`order_preparing_worker_idx`), as of `as_of`. No row: no open shop.
WITH w AS (
    SELECT id, name, concurrency, handler FROM workers_worker
    WHERE status = 'alive'
      AND CASE WHEN CAST(%(shop)s AS TEXT) IS NOT NULL THEN name = CAST(%(shop)s AS TEXT)
          ELSE id = COALESCE(CAST(%(worker)s AS BIGINT),
                             (SELECT b.owner_id FROM workers_bucket b WHERE b.number = %(bucket)s)) END
    ORDER BY incarnation DESC LIMIT 1
)
SELECT w.id, w.name, w.concurrency, w.handler, p.base, p.factor, queued.*, preparing.*
FROM w LEFT JOIN orders_shoppace p ON p.shop = w.name,
    (SELECT COALESCE(SUM(o.estimated_seconds), 0), COUNT(*) FROM orders_order o, w
     WHERE o.status = 'queued' AND o.rank <= %(rank)s AND o.eligible_at <= %(as_of)s
       AND (o.pinned_shop = w.name
            OR (o.pinned_shop = '' AND o.bucket IN (SELECT b.number FROM workers_bucket b WHERE b.owner_id = w.id)))
    ) AS queued,
    (SELECT COUNT(*), COALESCE(SUM(o.estimated_seconds), 0) FROM orders_order o, w
     WHERE o.status = 'preparing' AND o.worker_id = w.id) AS preparing;


-- name: quote_seconds
-- `quote.in_statement`: the seconds `quote` gives an order due now, from its shop's
-- `quote` row (spliced in ahead of this as `shop`); no row, no open shop: `unquoted`.
-- The same arithmetic as `Shop.make`, `Shop.work`, `queue_wait` and `promise_for`
-- (a test holds the two together), written in SQL so that `place` quotes a delivery
-- order inside its own statement instead of in a round trip before it.
SELECT COALESCE(MAX(GREATEST(0, lead + GREATEST(CAST(%(margin_share)s AS float8) * GREATEST(lead, 0),
                                                CAST(%(margin_floor)s AS float8)))),
                CAST(%(unquoted)s AS float8))
FROM (
    SELECT CASE WHEN queued + preparing < slots THEN 0
                ELSE (base * queued + factor * queued_estimate
                      + 0.5 * (base * preparing + factor * preparing_estimate)) / slots END
           + GREATEST(base + factor * %(estimated_seconds)s, floor)
           + CAST(%(handover)s AS float8) AS lead
    FROM (
        SELECT GREATEST(1, concurrency) AS slots, queued, queued_estimate, preparing, preparing_estimate,
            CASE WHEN base IS NOT NULL AND factor IS NOT NULL THEN base
                 WHEN handler = %(staffed)s THEN CAST(%(staffed_base)s AS float8) ELSE 0 END AS base,
            CASE WHEN base IS NOT NULL AND factor IS NOT NULL THEN factor
                 WHEN handler = %(staffed)s THEN CAST(%(staffed_factor)s AS float8)
                 ELSE CAST(%(speed)s AS float8) END AS factor,
            CASE WHEN handler = %(staffed)s THEN CAST(%(staffed_floor)s AS float8) ELSE 0 END AS floor
        FROM shop
    ) AS paced
) AS work;
