"""The line bridge: the inspector's local reject and heartbeat messages become PLC signals.

The component ``com.lineguard.LineBridge`` subscribes to ``lineguard/local/<station>/reject`` and
``lineguard/local/<station>/heartbeat`` (Greengrass local pub/sub or MQTT) and writes, per
station, a reject command carrying the part id and an "inspection healthy" signal to the line's
controller over OPC UA or Modbus TCP. See ``docs/line-bridge.md`` for the fail-safe contract.
"""

COMPONENT_NAME = "com.lineguard.LineBridge"
