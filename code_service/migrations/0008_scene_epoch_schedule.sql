-- Scene-key epochs follow the signing keys' schedule (0007; code_service.keys.service.KeySchedule): an epoch is
-- published from created_at, used in the codes issued from signs_from until signs_until, when its successor takes
-- over, and stays published until retire_at, when every code of it has expired. NULL signs_until and retire_at: no
-- successor yet. The next epoch is staged by a cron job, not by whichever process reads the keys.
ALTER TABLE codes.scene_epochs RENAME COLUMN use_from TO signs_from;
ALTER TABLE codes.scene_epochs
    ADD COLUMN signs_until timestamptz,
    ADD COLUMN retire_at   timestamptz;
ALTER INDEX codes.scene_epochs_use_idx RENAME TO scene_epochs_signs_idx;

-- An epoch with a successor was used until the successor's use began (the old schedule made them meet, and moved
-- an epoch's end when its successor came late). It keeps what verifiers were promised, the end of its planned
-- use plus 24 h 2 min, or the new schedule's 25 h after its successor took over, whichever is later. The newest
-- epoch keeps being used (or, if its use has not begun, stays staged) until the cron job stages its successor.
UPDATE codes.scene_epochs AS e
   SET signs_until = n.next_from,
       retire_at = greatest(n.next_from + interval '25 hours', e.use_until + interval '24 hours 2 minutes')
  FROM (SELECT epoch, lead(signs_from) OVER (ORDER BY signs_from, created_at, epoch) AS next_from
          FROM codes.scene_epochs) AS n
 WHERE e.epoch = n.epoch AND n.next_from IS NOT NULL;

-- The old code let the database stamp created_at after the first epoch's use had begun on the application's clock
-- (a moment earlier): that epoch was published as it was made.
UPDATE codes.scene_epochs SET created_at = signs_from WHERE created_at > signs_from;

ALTER TABLE codes.scene_epochs
    DROP COLUMN use_until,
    ALTER COLUMN created_at DROP DEFAULT,
    ADD CONSTRAINT scene_epochs_schedule_in_order
        CHECK (signs_from >= created_at AND (signs_until IS NULL OR signs_until >= signs_from));
