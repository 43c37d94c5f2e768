-- service_step: a function included by finish.lua and cancel.lua (`--! include service_step`).
--
-- service_step(svc_key, due_key, service_id, step, status, code, now)
--   Record, once, that a service's step ended (`status`: done, failed, cancelled) and return
--   the service's transition it causes: 'advance' (the last summary is done: start the later
--   steps), 'finish' (the last step is done), 'fail' (the first step that did not end done),
--   or '' (nothing to do: not a service step, already recorded, or steps remain). A
--   transition is also put in the due set until the one carrying it out confirms it, so a
--   crash in between is carried out again by whoever finds it there.

local function service_step(svc_key, due_key, service_id, step, status, code, now)
  if step == '' or redis.call('EXISTS', svc_key) == 0 then return '' end
  if redis.call('HSETNX', svc_key, 'step:' .. step, status) == 0 then return '' end
  local stage = redis.call('HGET', svc_key, 'stage')
  if status ~= 'done' then
    if stage == 'failing' or stage == 'closed' then return '' end
    redis.call('HSET', svc_key, 'stage', 'failing', 'error_step', step, 'error_code', code)
    redis.call('ZADD', due_key, now, service_id)
    return 'fail'
  end
  if tonumber(redis.call('HINCRBY', svc_key, 'left', -1)) > 0 then return '' end
  if stage == 'summaries' then
    redis.call('HSET', svc_key, 'stage', 'advancing')
    redis.call('ZADD', due_key, now, service_id)
    return 'advance'
  end
  if stage == 'steps' then
    redis.call('HSET', svc_key, 'stage', 'finishing')
    redis.call('ZADD', due_key, now, service_id)
    return 'finish'
  end
  return ''
end
