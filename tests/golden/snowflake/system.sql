SELECT 1 FROM "_gristmill"."loads" WHERE batch_id = :b LIMIT 1;
INSERT INTO "_gristmill"."loads" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP());
DELETE FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
INSERT INTO "_gristmill"."offsets" VALUES (:log, :grp, :off, CURRENT_TIMESTAMP());
SELECT "offset" FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
SELECT pack, source, SUM(loaded), SUM(duplicates), SUM(quarantined) FROM "_gristmill"."loads" WHERE log = :log GROUP BY pack, source;
MERGE INTO "_gristmill"."quarantine" AS q USING _gm_q AS s ON q.pack = s.pack AND q.source = s.source AND q.body_hash = s.body_hash AND q.replayed_at IS NULL WHEN MATCHED THEN UPDATE SET resends = COALESCE(q.resends, 1) + s.resends, last_seen_at = s.last_seen_at WHEN NOT MATCHED THEN INSERT ("quarantine_id", "pack", "source", "dialect", "reason", "detail", "errors", "event_id", "event_type", "received_at", "raw", "body_hash", "resends", "last_seen_at", "quarantined_at") VALUES (s."quarantine_id", s."pack", s."source", s."dialect", s."reason", s."detail", CAST(s."errors" AS VARIANT), s."event_id", s."event_type", s."received_at", s."raw", s."body_hash", s."resends", s."last_seen_at", CURRENT_TIMESTAMP());
SELECT pack, source, SUM(loaded) AS loaded, SUM(duplicates) AS duplicates, SUM(quarantined) AS quarantined, CAST(NULL AS BIGINT) AS off FROM "_gristmill"."loads" WHERE log = :log GROUP BY pack, source UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, "offset" FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
