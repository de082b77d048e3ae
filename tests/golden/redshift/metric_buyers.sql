SELECT COUNT(DISTINCT CASE WHEN "event_type" = 'order_created' THEN "store_id" END) AS "buyers" FROM "marketplace"."marketplace_events" WHERE "occurred_at" >= %(p0)s AND "occurred_at" < %(p1)s;
