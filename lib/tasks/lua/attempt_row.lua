-- attempt_row: a function included by start.lua and finish.lua (`--! include attempt_row`).
--
-- close_attempt(task_key, events_key, usage_key, now, provider, out_price)
--   The task's open attempt (field `open`) ended without its process (killed, or lost with
--   nobody to report it): append its usage row with what is known — model, start time,
--   the tokens it streamed (the `n` field of its last token event), success false,
--   error "lost" — and close it. Nothing happens when no attempt is open.
--   Reads task fields open, attempt_ms, model, user, service, template, mode, id, and
--   provider / out_price, which replace the arguments once the attempt fell back to another
--   model than its lease's (lib/lua/append_token.lua).
--   The row's keys are UsageRecord's fields (lib/usage_record.py), the llm_usage_logs columns.

local function close_attempt(task_key, events_key, usage_key, now, provider, out_price)
  local a = redis.call('HMGET', task_key, 'open', 'attempt_ms', 'model', 'user', 'service',
    'template', 'mode', 'id', 'provider', 'out_price')
  provider = a[9] or provider
  out_price = tonumber(a[10] or '') or out_price
  if not a[1] then return end
  local streamed = 0
  for _, entry in ipairs(redis.call('XREVRANGE', events_key, '+', '-', 'COUNT', 64)) do
    local f = {}
    for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
    if f['type'] == 'token' then
      streamed = tonumber(f['n'] or '0') or 0
      break
    end
    if f['type'] == 'started' then
      -- The attempt's start; a fallback's `started` carries the deltas streamed before it.
      streamed = tonumber(f['n'] or '0') or 0
      break
    end
  end
  local row = {
    user_id = a[4] or '', service_id = a[5] or '', task_template_id = a[6] or '',
    provider = provider or '', model_id = a[3] or '',
    input_tokens = 0, output_tokens = streamed, total_tokens = streamed,
    latency_ms = now - tonumber(a[2] or now),
    cost = string.format('%.8f', streamed * (out_price or 0) / 1000000),
    is_stream = a[7] == 'stream', is_success = false,
    error_message = 'lost: attempt ' .. a[1] .. ' ended without finishing',
    created_at = tonumber(a[2] or now),
    task_id = a[8], attempt = tonumber(a[1]),
  }
  redis.call('XADD', usage_key, '*', 'rows', cjson.encode({row}))
  redis.call('HDEL', task_key, 'open')
end
