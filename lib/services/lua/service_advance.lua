-- service_advance: move a service from its summaries to its later steps (the advance
-- transition carried out). Idempotent: only the first call switches the stage; a repeat
-- (a crash was found in the due set) leaves the count of steps left as it is.
--
-- KEYS[1] service hash
-- ARGV[1] number of later steps
-- Returns 1 when this call switched the stage, 0 when it had switched already, -1 when the
-- service is not advancing (failing, closed, or gone).

local stage = redis.call('HGET', KEYS[1], 'stage')
if stage == 'steps' or stage == 'finishing' then return 0 end
if stage ~= 'advancing' then return -1 end
redis.call('HSET', KEYS[1], 'stage', 'steps', 'left', tonumber(ARGV[1]))
return 1
