// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Reverts on any payment: a native transfer to it is mined with a failed status.
contract EtherRefuser {
    receive() external payable {
        revert("no ether");
    }
}
