-- include: keyed
-- Move due scheduled jobs into the queue. Atomic, so many workers running it at
-- once never promote a job twice. A due keyed job of a topic that takes turns between
-- keys (its keyof entry is its bare key, set when it was scheduled) goes behind its key's
-- job in the queue, as push_flow.lua pushes it (see flow_pop.lua).
-- KEYS[1] scheduled  sorted set: job id -> due time (ms)
-- KEYS[2] schedprio  hash: job id -> priority
-- KEYS[3] queue      sorted set
-- KEYS[4] seq        counter
-- KEYS[5] wake       list idle workers block on
-- KEYS[6] keyheads   hash: job key -> the id of its job in the queue
-- KEYS[7] keyof      hash: job id -> "<key>\t<score in hex>" for a queued keyed job, "<key>" for a scheduled one
-- KEYS[8] keyqueue   sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV[1] how many at most
-- ARGV[2] now in ms, or "" for the Redis server's clock
-- Returns the promoted job ids.
local SHIFT = 17592186044416
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local priority = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  local key = redis.call('HGET', KEYS[7], id)
  if redis.call('ZSCORE', KEYS[3], id) or (key and string.find(key, '\t', 1, true)) then
    -- Already queued (in the queue, or behind its key's job): it keeps its place.
  elseif key then
    keyed_push(KEYS[3], KEYS[4], KEYS[6], KEYS[7], KEYS[8], key, id, priority)
  else
    redis.call('ZADD', KEYS[3], (100 - priority) * SHIFT + redis.call('INCR', KEYS[4]), id)
  end
end
if #ids > 0 then
  local tokens = {}
  for i = 1, math.min(#ids, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[5], unpack(tokens))
  redis.call('LTRIM', KEYS[5], 0, 63)
end
return ids
