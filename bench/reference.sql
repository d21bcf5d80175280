-- stallwatch reference: the per-view QoE metrics and the per-(video, playhead bucket) stall
-- profile of docs/metrics.md and docs/detection.md, written independently in DuckDB SQL.
--
-- It is (1) the speed reference `make bench` compares the pipeline with, on the same file, in
-- the same run, and (2) a correctness oracle (tests/test_reference.py): the pipeline's views must
-- agree with it. It is written from the documents, not from transforms/viewstate.py, and covers
-- what beacon v1 workloads contain: the three message shapes, ISO or epoch-ms `ts`,
-- de-duplication by event_id / seq / content, seq ordering, startup, EBVS, failures, stalls
-- (waiting / stalled / rebufferstart while playing; ended by playing, rebufferend, seeking, pause,
-- ended, viewend, a fatal error, a heartbeat past the stall position, or the last beacon), seeks,
-- watch and playing time, played ranges and exposure.
-- Not covered (the pipeline has them; the oracle's workloads avoid them): views split by an hour
-- of inactivity or a video change, the 300 s force-end, the arrival-time bound on event time,
-- clock-skew placement, seeks started while paused, heartbeats that resume a startup.
--
-- Parameters (replaced by bench/reference.py): {source} a glob of NDJSON files,
-- {bucket_ms} the playhead bucket (--bucket_ms, 5000), {minute_ms} the metrics bucket
-- (--metrics_bucket_s, 60 s), {max_lag_ms} and {max_lead_ms} how far a device's ts may stray
-- from the collector's received_ms (--max_lag_s 300, --max_lead_s 60).

-- 1. Messages -> events. One JSON value per line; arrays and envelopes unnested, envelope
--    fields as defaults.
CREATE OR REPLACE TEMP TABLE lines AS
SELECT json AS j FROM read_ndjson_objects('{source}', ignore_errors = true);

CREATE OR REPLACE TEMP TABLE raw_events AS
WITH parts AS (
    SELECT unnest(CAST(j AS JSON[])) AS e, NULL::JSON AS d FROM lines WHERE json_type(j) = 'ARRAY'
    UNION ALL
    SELECT unnest(CAST(json_extract(j, '$.events') AS JSON[])) AS e, j AS d FROM lines
    WHERE json_type(j) = 'OBJECT' AND json_type(json_extract(j, '$.events')) = 'ARRAY'
    UNION ALL
    SELECT j AS e, NULL::JSON AS d FROM lines
    WHERE json_type(j) = 'OBJECT' AND json_extract(j, '$.events') IS NULL
)
SELECT
    coalesce(json_extract_string(e, '$.view_id'), json_extract_string(d, '$.view_id')) AS view_id,
    coalesce(json_extract_string(e, '$.video_id'), json_extract_string(d, '$.video_id')) AS video_id,
    coalesce(json_extract_string(e, '$.viewer_id'), json_extract_string(d, '$.viewer_id')) AS viewer_id,
    json_extract_string(e, '$.event') AS kind,
    CASE WHEN json_type(json_extract(e, '$.ts')) = 'VARCHAR'
         THEN epoch_ms(CAST(replace(json_extract_string(e, '$.ts'), 'Z', '+00:00') AS TIMESTAMPTZ))
         ELSE CAST(json_extract_string(e, '$.ts') AS BIGINT) END AS ts,
    TRY_CAST(json_extract_string(e, '$.playhead_ms') AS BIGINT) AS ph,
    json_extract(e, '$.playhead_ms') IS NOT NULL AS ph_sent,
    CAST(json_extract_string(e, '$.seq') AS BIGINT) AS seq,
    json_extract_string(e, '$.event_id') AS event_id,
    coalesce(CAST(json_extract_string(e, '$.fatal') AS BOOLEAN), true) AS fatal,
    coalesce(CAST(json_extract_string(e, '$.business_error') AS BOOLEAN), false) AS business,
    CAST(coalesce(json_extract_string(e, '$.received_ms'), json_extract_string(d, '$.received_ms')) AS BIGINT) AS received_ms,
    json_extract_string(e, '$.rendition') AS rendition,
    coalesce(json_extract_string(e, '$.cdn'), json_extract_string(d, '$.cdn')) AS cdn,
    coalesce(json_extract_string(e, '$.asn'), json_extract_string(d, '$.asn')) AS asn,
    coalesce(json_extract_string(e, '$.country'), json_extract_string(d, '$.country')) AS country,
    coalesce(json_extract_string(e, '$.browser'), json_extract_string(d, '$.browser')) AS browser,
    coalesce(json_extract_string(e, '$.os'), json_extract_string(d, '$.os')) AS os,
    coalesce(json_extract_string(e, '$.device'), json_extract_string(d, '$.device')) AS device,
    coalesce(json_extract_string(e, '$.player_name'), json_extract_string(d, '$.player_name')) AS player_name,
    coalesce(json_extract_string(e, '$.stream_type'), json_extract_string(d, '$.stream_type')) AS stream_type
FROM parts;

-- 2. Valid events only (what the pipeline would dead-letter is left out), de-duplicated.
CREATE OR REPLACE TEMP TABLE events AS
WITH valid AS (
    SELECT *,
           CASE WHEN event_id IS NOT NULL THEN 'id:' || event_id
                WHEN seq IS NOT NULL THEN 'seq:' || seq
                ELSE 'raw:' || kind || ':' || ts || ':' || coalesce(ph, -1) END AS dedupe_key
    FROM raw_events
    WHERE view_id IS NOT NULL AND video_id IS NOT NULL AND ts IS NOT NULL
      AND kind IN ('viewstart', 'playerready', 'play', 'playing', 'pause', 'seeking', 'seeked',
                   'waiting', 'stalled', 'rebufferstart', 'rebufferend', 'timeupdate',
                   'heartbeat', 'renditionchange', 'error', 'ended', 'viewend')
      AND (ph IS NOT NULL OR kind IN ('viewstart', 'playerready', 'viewend'))
      AND (ph IS NOT NULL OR NOT ph_sent)                      -- a playhead that is not a number
      AND ts BETWEEN 946684800000 AND 4102444800000            -- 2000-01-01 ... 2100-01-01
), unique_events AS (
    SELECT * EXCLUDE (n) FROM (
        SELECT *, row_number() OVER (PARTITION BY view_id, dedupe_key ORDER BY ts) AS n FROM valid)
    WHERE n = 1
), keyed AS (
    SELECT *,
           bool_and(seq IS NOT NULL) OVER (PARTITION BY view_id) AS all_seq,
           -- the order a player emits same-time events in (docs/metrics.md)
           list_position(['viewstart', 'playerready', 'play', 'seeking', 'seeked', 'waiting',
                          'stalled', 'rebufferstart', 'rebufferend', 'playing', 'renditionchange',
                          'timeupdate', 'heartbeat', 'pause', 'error', 'ended', 'viewend'], kind) AS rank
    FROM unique_events
)
SELECT *,
       row_number() OVER (PARTITION BY view_id ORDER BY
           CASE WHEN all_seq THEN seq ELSE 0 END, ts, coalesce(seq, -1), rank) AS i
FROM keyed;

-- 3. The state machine, as window functions. `base` is the state set by events whose effect
--    does not depend on being stalled; stall starts and heartbeat resumes are then placed
--    against it.
CREATE OR REPLACE TEMP TABLE steps AS
WITH frames AS (
    SELECT *,
           count(*) FILTER (WHERE kind = 'playing') OVER w_before > 0 AS started,
           (kind = 'error' AND fatal AND NOT business) AS failure
    FROM events
    WINDOW w_before AS (PARTITION BY view_id ORDER BY i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), assigned AS (
    SELECT *,
           CASE kind
               WHEN 'play' THEN CASE WHEN started THEN 'playing' ELSE 'startup' END
               WHEN 'playing' THEN 'playing'
               WHEN 'rebufferend' THEN 'playing'
               WHEN 'pause' THEN 'paused'
               WHEN 'seeking' THEN CASE WHEN started THEN 'seeking' END
               WHEN 'ended' THEN 'ended'
               WHEN 'viewend' THEN 'ended'
               WHEN 'error' THEN CASE WHEN fatal THEN 'ended' END
           END AS sets
    FROM frames
), based AS (
    SELECT *,
           coalesce(last_value(sets IGNORE NULLS) OVER (PARTITION BY view_id ORDER BY i
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 'idle') AS before
    FROM assigned
), stall_marks AS (
    -- A stall starts at a waiting/stalled/rebufferstart while playing; a second one before
    -- the state changes is the same stall.
    SELECT *,
           kind IN ('waiting', 'stalled', 'rebufferstart') AND before = 'playing' AS stall_event
    FROM based
), stall_groups AS (
    SELECT *,
           -- the number of state-setting events so far: stall events between two of them
           -- belong to one stall
           count(sets) OVER (PARTITION BY view_id ORDER BY i) AS epoch
    FROM stall_marks
), firsts AS (
    SELECT *,
           stall_event AND row_number() OVER (PARTITION BY view_id, epoch, stall_event ORDER BY i) = 1
               AS stall_start
    FROM stall_groups
)
SELECT *,
       last_value(CASE WHEN stall_start THEN ph END IGNORE NULLS) OVER w_upto AS stall_ph,
       last_value(CASE WHEN stall_start THEN epoch END IGNORE NULLS) OVER w_upto AS stall_epoch
FROM firsts
WINDOW w_upto AS (PARTITION BY view_id ORDER BY i ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW);

-- The state after each event: the base state, except 'stalled' from a stall start until the
-- next state change or a heartbeat 250 ms past the stall position. Time only moves forward: a
-- beacon whose ts is earlier than one before it (seq order) adds no time (`clock`).
CREATE OR REPLACE TEMP TABLE states AS
WITH marks AS (
    SELECT *,
           CASE WHEN stall_start THEN 'stalled'
                WHEN sets IS NOT NULL THEN sets
                WHEN kind IN ('heartbeat', 'timeupdate') AND stall_epoch = epoch
                     AND ph > stall_ph + 250 THEN 'playing'
           END AS mark
    FROM steps
)
SELECT *,
       last_value(mark IGNORE NULLS) OVER (PARTITION BY view_id ORDER BY i
           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS state_after,
       lead(ph) OVER (PARTITION BY view_id ORDER BY i) AS next_ph,
       lead(ts) OVER (PARTITION BY view_id ORDER BY i) AS next_ts
FROM (SELECT *, max(ts) OVER (PARTITION BY view_id ORDER BY i
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS clock
      FROM marks);

CREATE OR REPLACE TEMP TABLE charged AS
SELECT *, coalesce(lead(clock) OVER (PARTITION BY view_id ORDER BY i) - clock, 0) AS dt
FROM states;

-- 4. Per-view metrics.
CREATE OR REPLACE TEMP TABLE ref_views AS
SELECT
    view_id,
    any_value(video_id) AS video_id,
    coalesce(first(viewer_id ORDER BY i) FILTER (WHERE viewer_id IS NOT NULL), 'view:' || view_id) AS viewer_id,
    count(*) AS events,
    bool_or(kind = 'play' OR kind = 'playing') AS play_requested,
    min(ts) FILTER (WHERE kind = 'playing') - min(ts) FILTER (WHERE kind = 'play') AS startup_raw,
    bool_or(kind = 'playing') AS first_frame,
    bool_or(kind = 'error' AND fatal AND NOT business) AS playback_failure,
    count(*) FILTER (WHERE stall_start) AS rebuffer_count,
    coalesce(sum(dt) FILTER (WHERE state_after = 'stalled'), 0) AS rebuffer_ms,
    coalesce(sum(dt) FILTER (WHERE state_after IN ('startup', 'playing', 'stalled', 'seeking')), 0) AS watch_ms,
    coalesce(sum(dt) FILTER (WHERE state_after = 'playing'), 0) AS playing_ms,
    count(*) FILTER (WHERE kind = 'seeking' AND started AND before <> 'seeking') AS seek_count,
    -- seek latency is the span between the seek's own beacons (not clamped to the clock)
    coalesce(sum(next_ts - ts) FILTER (WHERE state_after = 'seeking'), 0) AS seek_ms,
    coalesce(max(ph), 0) AS max_playhead_ms
FROM charged
GROUP BY view_id;

-- 5. Stall profile per (video, playhead bucket): distinct viewers whose stall started in the
--    bucket, and distinct viewers who played through it or stalled in it (exposure). A played
--    range is the playhead moving forward while playing, no faster than 2x wall time + 15 s.
CREATE OR REPLACE TEMP TABLE ref_stalls AS
SELECT s.video_id, s.ph // {bucket_ms} AS bucket, count(DISTINCT v.viewer_id) AS stalled_viewers
FROM states s JOIN ref_views v USING (view_id)
WHERE s.stall_start
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE ref_exposure AS
WITH ranges AS (
    SELECT s.video_id, v.viewer_id, s.ph AS lo, s.next_ph AS hi
    FROM states s JOIN ref_views v USING (view_id)
    WHERE s.state_after = 'playing' AND s.next_ph > s.ph
      AND s.next_ph - s.ph <= 2 * (s.next_ts - s.ts) + 15000
)
SELECT video_id, bucket, count(DISTINCT viewer_id) AS exposed_viewers
FROM (SELECT video_id, viewer_id, unnest(range(lo // {bucket_ms}, hi // {bucket_ms} + 1)) AS bucket FROM ranges
      UNION ALL    -- a viewer who stalled at a position was exposed to it (docs/metrics.md, `played`)
      SELECT s.video_id, v.viewer_id, s.ph // {bucket_ms} FROM states s JOIN ref_views v USING (view_id)
      WHERE s.stall_start)
GROUP BY ALL;

-- 6. Per-minute aggregates (docs/metrics.md, "Aggregates"). A view counts in the minute of its
--    end: its last beacon on the device clock, moved by the median (the upper one of an even
--    count) of its beacons' event-time corrections; a beacon's event time is its ts, or the
--    collector's received_ms when ts strays further than the bounds from it. Dimensions are
--    each view's first value seen; its rendition is the one it spent the most playing time on
--    (ties: the one played first), else the last one reported. Percentiles are linear
--    interpolated (quantile_cont), as numpy's default.
CREATE OR REPLACE TEMP TABLE ref_view_facts AS
WITH placed AS (
    SELECT *,
           CASE WHEN received_ms IS NULL
                     OR ts BETWEEN received_ms - {max_lag_ms} AND received_ms + {max_lead_ms}
                THEN 0 ELSE received_ms - ts END AS correction,
           last_value(rendition IGNORE NULLS) OVER (PARTITION BY view_id ORDER BY i
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS rendition_now
    FROM charged
), per_rendition AS (
    SELECT view_id, rendition_now, sum(dt) AS ms, min(i) AS first_i
    FROM placed WHERE state_after = 'playing' AND rendition_now IS NOT NULL AND dt > 0
    GROUP BY ALL
), longest AS (
    SELECT view_id, arg_max(rendition_now, (ms, -first_i)) AS rendition FROM per_rendition GROUP BY ALL
), facts AS (
    SELECT view_id,
           max(clock) + list_sort(list(correction))[count(*) // 2 + 1] AS end_ms,
           last(rendition_now ORDER BY i) AS last_rendition,
           first(cdn ORDER BY i) FILTER (WHERE cdn IS NOT NULL) AS cdn,
           first(asn ORDER BY i) FILTER (WHERE asn IS NOT NULL) AS asn,
           first(country ORDER BY i) FILTER (WHERE country IS NOT NULL) AS country,
           first(browser ORDER BY i) FILTER (WHERE browser IS NOT NULL) AS browser,
           first(os ORDER BY i) FILTER (WHERE os IS NOT NULL) AS os,
           first(device ORDER BY i) FILTER (WHERE device IS NOT NULL) AS device,
           first(player_name ORDER BY i) FILTER (WHERE player_name IS NOT NULL) AS player_name,
           first(stream_type ORDER BY i) FILTER (WHERE stream_type IS NOT NULL) AS stream_type
    FROM placed GROUP BY view_id
)
SELECT v.view_id, v.video_id, f.end_ms, f.end_ms // {minute_ms} * {minute_ms} AS minute_ms,
       v.watch_ms, v.rebuffer_ms, v.rebuffer_count, v.playback_failure,
       v.play_requested AND NOT v.first_frame AND NOT v.playback_failure AS ebvs,
       CASE WHEN v.first_frame THEN v.startup_raw END AS startup_ms,
       coalesce(l.rendition, f.last_rendition) AS rendition,
       f.cdn, f.asn, f.country, f.browser, f.os, f.device, f.player_name, f.stream_type
FROM ref_views v JOIN facts f USING (view_id) LEFT JOIN longest l USING (view_id);

CREATE OR REPLACE TEMP TABLE ref_metrics AS
WITH cells AS (
    UNPIVOT (SELECT *, 'all' AS "all" FROM ref_view_facts)
    ON "all", video_id, cdn, asn, country, browser, os, device, rendition, player_name, stream_type
    INTO NAME dimension VALUE value
)
SELECT minute_ms, dimension, value,
       count(*) AS views,
       sum(watch_ms) AS watch_ms, sum(rebuffer_ms) AS rebuffer_ms, sum(rebuffer_count) AS rebuffer_count,
       quantile_cont(startup_ms, 0.50) AS startup_p50_ms,
       quantile_cont(startup_ms, 0.95) AS startup_p95_ms,
       CASE WHEN sum(watch_ms) > 0 THEN 100.0 * sum(rebuffer_ms) / sum(watch_ms) ELSE 0 END AS rebuffer_pct,
       CASE WHEN sum(watch_ms) > 0 THEN sum(rebuffer_count) * 60000.0 / sum(watch_ms) ELSE 0 END AS rebuffer_per_min,
       100.0 * count(*) FILTER (WHERE playback_failure) / count(*) AS playback_failure_pct,
       100.0 * count(*) FILTER (WHERE ebvs) / count(*) AS ebvs_pct
FROM cells
GROUP BY ALL;
