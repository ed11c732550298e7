# The service's own system user; it reads logs through the adm group, never as root.
getent group kinesis-agent >/dev/null || groupadd -r kinesis-agent
if ! getent passwd kinesis-agent >/dev/null; then
    useradd -r -g kinesis-agent -d /var/lib/kinesis-agent -s /sbin/nologin -c "kinesis-agent log shipper" kinesis-agent
    # Reads logs through adm; added once, so an admin's later removal sticks.
    getent group adm >/dev/null && usermod -a -G adm kinesis-agent || true
fi
