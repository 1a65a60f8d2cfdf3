-- Remove a keyed job from every structure of its topic (cancel, delete), as remove.lua
-- does, and from the keyqueue; if it was its key's job in the queue, the key's next job
-- takes its place (see flow_pop.lua).
-- KEYS[1] queue      sorted set
-- KEYS[2] leases     sorted set
-- KEYS[3] entities   hash: entity id -> job id
-- KEYS[4] scheduled  sorted set
-- KEYS[5] schedprio  hash
-- KEYS[6] keyheads   hash: job key -> the id of its job in the queue
-- KEYS[7] keyof      hash: job id -> "<key>\t<score in hex>": its keyqueue entry, less the id
-- KEYS[8] seq        counter
-- KEYS[9] keyqueue   sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- KEYS[10] keyfull  flag: a pop passed over jobs whose key was full (see flow_pop.lua)
-- KEYS[11] wake     list that idle workers block on: a removed running job's place wakes one
-- ARGV[1] job id
-- ARGV[2] entity id or ""
-- Returns 1 if the job was queued or scheduled, 0 otherwise.
local SHIFT = 17592186044416
local id = ARGV[1]
local removed = redis.call('ZREM', KEYS[1], id) + redis.call('ZREM', KEYS[4], id)
local tag = redis.call('HGET', KEYS[7], id)
if tag then
  local key = string.match(tag, '^[^\t]*')
  redis.call('HDEL', KEYS[7], id)
  local low, high = string.format('[%s\t', key), string.format('(%s\n', key)
  removed = removed + redis.call('ZREM', KEYS[9], string.format('%s%s', tag, id))
  if redis.call('HGET', KEYS[6], key) == id then
    local nxt = redis.call('ZRANGEBYLEX', KEYS[9], low, high, 'LIMIT', 0, 1)[1]
    if nxt then
      redis.call('ZREM', KEYS[9], nxt)
      local score = tonumber(string.sub(nxt, #key + 2, #key + 15), 16)
      local next_id = string.sub(nxt, #key + 16)
      redis.call('ZADD', KEYS[1], math.floor(score / SHIFT) * SHIFT + redis.call('INCR', KEYS[8]), next_id)
      redis.call('HSET', KEYS[6], key, next_id)
    else
      redis.call('HDEL', KEYS[6], key)
    end
  end
end
if redis.call('ZREM', KEYS[2], id) == 1 and redis.call('EXISTS', KEYS[10]) == 1 then
  redis.call('RPUSH', KEYS[11], '1')
  redis.call('LTRIM', KEYS[11], 0, 63)
end
redis.call('HDEL', KEYS[5], id)
if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[2]) == id then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return removed
