-- Repair a topic's turns between job keys (maintenance; see flow_pop.lua).
-- A key whose head left the queue by a path that does not know keys (remove.lua, a
-- resync dropping a stale id) gets its next job moved into the queue. With ARGV[1] = "1"
-- (the topic no longer takes turns between keys) every waiting keyed job is moved back
-- into the queue, each key's jobs after its head, and the key maps are dropped, so plain
-- pop.lua serves them all.
-- KEYS[1] queue     sorted set
-- KEYS[2] seq       counter
-- KEYS[3] keyheads  hash: job key -> the id of its job in the queue
-- KEYS[4] keyof     hash: job id -> "<key>\t<score in hex>", for queued keyed jobs
-- KEYS[5] wake      list idle workers block on
-- KEYS[6] keyqueue  sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV[1] "1" to move every waiting keyed job back, "" to repair heads only
-- Returns the number of jobs moved into the queue.
local SHIFT = 17592186044416
local moved = 0
local function enqueue(key, member)
  local score = tonumber(string.sub(member, #key + 2, #key + 15), 16)
  local id = string.sub(member, #key + 16)
  redis.call('ZADD', KEYS[1], 'NX', math.floor(score / SHIFT) * SHIFT + redis.call('INCR', KEYS[2]), id)
  moved = moved + 1
  return id
end
local heads = redis.call('HGETALL', KEYS[3])
for i = 1, #heads, 2 do
  local key, head = heads[i], heads[i + 1]
  local low, high = string.format('[%s\t', key), string.format('(%s\n', key)
  if ARGV[1] == '1' then
    for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], low, high)) do
      enqueue(key, member)
    end
    redis.call('ZREMRANGEBYLEX', KEYS[6], low, high)
  elseif not redis.call('ZSCORE', KEYS[1], head) then
    local nxt = redis.call('ZRANGEBYLEX', KEYS[6], low, high, 'LIMIT', 0, 1)[1]
    if nxt then
      redis.call('ZREM', KEYS[6], nxt)
      redis.call('HSET', KEYS[3], key, enqueue(key, nxt))
    else
      redis.call('HDEL', KEYS[3], key)
    end
  end
end
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[3], KEYS[4])
end
if moved > 0 then
  redis.call('RPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 63)
end
return moved
