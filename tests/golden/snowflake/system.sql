SELECT 1 FROM "_gristmill"."loads" WHERE batch_id = :b LIMIT 1;
INSERT INTO "_gristmill"."loads" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP());
DELETE FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
INSERT INTO "_gristmill"."offsets" VALUES (:log, :grp, :off, CURRENT_TIMESTAMP());
SELECT "offset" FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
SELECT pack, source, SUM(loaded), SUM(duplicates), SUM(quarantined) FROM "_gristmill"."loads" WHERE log = :log GROUP BY pack, source;
INSERT INTO "_gristmill"."quarantine" ("quarantine_id", "pack", "source", "dialect", "reason", "detail", "errors", "event_id", "event_type", "received_at", "raw", "quarantined_at") SELECT "quarantine_id", "pack", "source", "dialect", "reason", "detail", CAST("errors" AS VARIANT), "event_id", "event_type", "received_at", "raw", CURRENT_TIMESTAMP() FROM _gm_q;
SELECT pack, source, SUM(loaded) AS loaded, SUM(duplicates) AS duplicates, SUM(quarantined) AS quarantined, CAST(NULL AS BIGINT) AS off FROM "_gristmill"."loads" WHERE log = :log GROUP BY pack, source UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, "offset" FROM "_gristmill"."offsets" WHERE log = :log AND grp = :grp;
