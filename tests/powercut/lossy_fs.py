#!/usr/bin/python3
"""A filesystem that forgets what was not made durable, for power-cut tests.

Everything lives in memory. Each file keeps two contents: what was written, and what the last
fsync/fdatasync made durable. Each directory keeps two listings: its entries now, and as the
last fsync of the directory left them (POSIX: a new name, a rename or an unlink is durable only
then). A "power cut" puts every file and directory back to its durable state, which is what a
machine that loses power can keep, at worst. The idea is LazyFS's (used by Jepsen).

    lossy_fs.py MOUNTPOINT CONTROL_SOCKET

Mounted in the foreground until unmounted (umount MOUNTPOINT). A client of the UNIX socket
CONTROL_SOCKET sends `cut` (answered `ok N`, N the files that lost data or names) or `stats`.
Runs as root; uses Debian's python3-fusepy (libfuse2) and direct I/O, so no page cache holds
data the filesystem has forgotten.
"""

import errno
import os
import socket
import stat
import sys
import threading
import time

import fusepy
from fusepy import FUSE, FuseOSError, Operations


class Node:
    def __init__(self, mode):
        now = time.time()
        self.mode = mode
        self.data = bytearray()
        self.durable = b""
        self.entries = {}
        self.durable_entries = {}
        self.mtime = now
        self.ctime = now

    def is_dir(self):
        return stat.S_ISDIR(self.mode)


class LossyFs(Operations):
    def __init__(self):
        self.mutex = threading.RLock()
        self.root = Node(stat.S_IFDIR | 0o755)
        self.fsyncs = 0

    # -- paths --------------------------------------------------------------------------
    def _split(self, path):
        return [p for p in path.split("/") if p]

    def _node(self, path):
        node = self.root
        for part in self._split(path):
            if not node.is_dir() or part not in node.entries:
                raise FuseOSError(errno.ENOENT)
            node = node.entries[part]
        return node

    def _parent(self, path):
        parts = self._split(path)
        if not parts:
            raise FuseOSError(errno.EINVAL)
        parent = self._node("/" + "/".join(parts[:-1]))
        if not parent.is_dir():
            raise FuseOSError(errno.ENOTDIR)
        return parent, parts[-1]

    # -- the power cut ------------------------------------------------------------------
    def cut(self):
        """Everything back to what fsync made durable; returns how many nodes lost anything."""
        with self.mutex:
            lost = 0
            seen = set()

            def revert(node):
                nonlocal lost
                if id(node) in seen:
                    return
                seen.add(id(node))
                if node.is_dir():
                    if node.entries != node.durable_entries:
                        lost += 1
                    node.entries = dict(node.durable_entries)
                    for child in list(node.entries.values()):
                        revert(child)
                else:
                    if bytes(node.data) != node.durable:
                        lost += 1
                    node.data = bytearray(node.durable)

            revert(self.root)
            return lost

    # -- metadata -----------------------------------------------------------------------
    def getattr(self, path, fh=None):
        with self.mutex:
            node = self._node(path)
            return {
                "st_mode": node.mode,
                "st_nlink": 2 if node.is_dir() else 1,
                "st_size": len(node.data),
                "st_uid": 0,
                "st_gid": 0,
                "st_mtime": node.mtime,
                "st_ctime": node.ctime,
                "st_atime": node.mtime,
                "st_blocks": (len(node.data) + 511) // 512,
            }

    def chmod(self, path, mode):
        with self.mutex:
            node = self._node(path)
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        with self.mutex:
            node = self._node(path)
            node.mtime = (times or (time.time(), time.time()))[1]
            return 0

    def statfs(self, path):
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 24, "f_bfree": 1 << 23,
                "f_bavail": 1 << 23, "f_files": 1 << 20, "f_ffree": 1 << 19, "f_namemax": 255}

    def access(self, path, amode):
        with self.mutex:
            self._node(path)
            return 0

    # -- directories --------------------------------------------------------------------
    def readdir(self, path, fh):
        with self.mutex:
            node = self._node(path)
            if not node.is_dir():
                raise FuseOSError(errno.ENOTDIR)
            return [".", ".."] + list(node.entries)

    def mkdir(self, path, mode):
        with self.mutex:
            parent, name = self._parent(path)
            if name in parent.entries:
                raise FuseOSError(errno.EEXIST)
            parent.entries[name] = Node(stat.S_IFDIR | (mode & 0o7777))
            return 0

    def rmdir(self, path):
        with self.mutex:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            if not node.is_dir():
                raise FuseOSError(errno.ENOTDIR)
            if node.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del parent.entries[name]
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            node = self._node(path)
            node.durable_entries = dict(node.entries)
            self.fsyncs += 1
            return 0

    # -- files --------------------------------------------------------------------------
    def create(self, path, mode, fi=None):
        with self.mutex:
            parent, name = self._parent(path)
            if name not in parent.entries:
                parent.entries[name] = Node(stat.S_IFREG | (mode & 0o7777))
            return 0

    def open(self, path, flags):
        with self.mutex:
            node = self._node(path)
            if flags & os.O_TRUNC:
                node.data = bytearray()
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            node = self._node(path)
            return bytes(node.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self.mutex:
            node = self._node(path)
            if offset > len(node.data):
                node.data.extend(b"\0" * (offset - len(node.data)))
            node.data[offset:offset + len(data)] = data
            node.mtime = time.time()
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            node = self._node(path)
            if length < len(node.data):
                del node.data[length:]
            else:
                node.data.extend(b"\0" * (length - len(node.data)))
            return 0

    def fsync(self, path, datasync, fh):
        with self.mutex:
            node = self._node(path)
            node.durable = bytes(node.data)
            self.fsyncs += 1
            return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def unlink(self, path):
        with self.mutex:
            parent, name = self._parent(path)
            if name not in parent.entries:
                raise FuseOSError(errno.ENOENT)
            del parent.entries[name]
            return 0

    def rename(self, old, new):
        with self.mutex:
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            node = old_parent.entries.get(old_name)
            if node is None:
                raise FuseOSError(errno.ENOENT)
            target = new_parent.entries.get(new_name)
            if target is not None and target.is_dir() and target.entries:
                raise FuseOSError(errno.ENOTEMPTY)
            del old_parent.entries[old_name]
            new_parent.entries[new_name] = node
            return 0


def control(fs, sock_path):
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.recv(64).decode().strip()
            if command == "cut":
                conn.sendall(f"ok {fs.cut()}\n".encode())
            elif command == "stats":
                conn.sendall(f"ok fsyncs={fs.fsyncs}\n".encode())
            else:
                conn.sendall(b"unknown command\n")


def main():
    mountpoint, sock_path = sys.argv[1], sys.argv[2]
    fs = LossyFs()
    threading.Thread(target=control, args=(fs, sock_path), daemon=True).start()
    FUSE(fs, mountpoint, foreground=True, nothreads=False, direct_io=True,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, default_permissions=True)


if __name__ == "__main__":
    main()
