// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// An ERC-20 for tests: any decimals, anyone may mint, transfers can be made to revert,
/// and one call can emit many Transfer logs (distinct log indexes in one transaction).
contract TestToken is ERC20 {
    uint8 private immutable _decimals;
    bool public transfersBlocked;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// While set, every transfer (and mint) reverts: lets a test mine a failed transfer.
    function setTransfersBlocked(bool blocked) external {
        transfersBlocked = blocked;
    }

    function transferMany(address[] calldata recipients, uint256[] calldata amounts) external {
        require(recipients.length == amounts.length, "length mismatch");
        for (uint256 i = 0; i < recipients.length; i++) {
            _transfer(msg.sender, recipients[i], amounts[i]);
        }
    }

    function _update(address from, address to, uint256 value) internal override {
        require(!transfersBlocked, "transfers blocked");
        super._update(from, to, value);
    }
}
